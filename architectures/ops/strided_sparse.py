"""The Sparse Transformer's strided pattern (Child et al. 2019, arXiv:1904.10509, section 4.2, Figure 3b), causal.

With stride l the paper factorises full attention into two patterns:

    A(1)_i = {j : i - l < j <= i}                    "local": the previous l positions, itself included
    A(2)_i = {j : j <= i and (i - j) mod l = 0}      "strided": every l-th position back from i

(the definitions of the authors' code, openai/sparse_attention: ``local`` is the band of l positions, ``strided``
the positions whose distance is a multiple of l). Of the paper's ways to integrate them (section 4.3) this is the
"merged head", its equation (4): every head attends to the union A(1) u A(2) in one softmax. With l ~ sqrt(n) a query
reads l + i/l ~ 2 sqrt(n) keys, so a layer costs O(n sqrt(n) d) time and O(n sqrt(n)) memory.

``naive_strided_sparse_attention`` is the oracle loop. ``strided_sparse_attention`` computes on gathered blocks, never
an n x n matrix. The sequence is read as an (n/l, l) grid, position b*l + r at row b, column r:
- local: a query block (row b) against its own row (causal) and the previous row (the keys i - l < j < b*l):
  (B, H, n/l, l, 2l) scores;
- strided: column r holds the positions = r (mod l), so the strided keys of a query are the earlier rows of its own
  column: (B, H, l, n/l, n/l) scores, i.e. n^2 / l = n sqrt(n) entries;
and the three score blocks share one softmax per query.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def default_stride(seq_len: int) -> int:
    """The paper's l ~ sqrt(n): ceil(sqrt(n)) (at least 1)."""
    return max(1, math.isqrt(max(seq_len, 1) - 1) + 1)


def strided_positions(i: int, stride: int) -> list[int]:
    """A(1) u A(2) of query i, oldest first: i - k*stride for k >= 1 (strided), then i - stride + 1 .. i (local)."""
    local_start = max(0, i - stride + 1)
    return list(range(i % stride, i - stride + 1, stride)) + list(range(local_start, i + 1))


def naive_strided_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, stride: int) -> torch.Tensor:
    """q, k, v: (B, T, H, D) -> (B, T, H, D) in fp32; a loop over queries with the visible set as in the paper."""
    q, k, v = q.float(), k.float(), v.float()
    B, T, H, D = q.shape
    out = torch.zeros(B, T, H, v.shape[-1])
    for i in range(T):
        visible = [j for j in range(T) if j <= i and (i - j < stride or (i - j) % stride == 0)]  # A(1) u A(2)
        idx = torch.tensor(visible, dtype=torch.long)
        scores = torch.einsum("bhd,bshd->bhs", q[:, i], k[:, idx]) / math.sqrt(D)  # (B, H, |visible|)
        out[:, i] = torch.einsum("bhs,bshd->bhd", scores.softmax(dim=-1), v[:, idx])
    return out


def strided_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, stride: int) -> torch.Tensor:
    """The fast form of ``naive_strided_sparse_attention``. q, k, v: (B, T, H, D) -> (B, T, H, D)."""
    B, T, H, D = q.shape
    l = stride
    nb = -(-T // l)
    pad = nb * l - T
    dev = q.device

    def grid(t: torch.Tensor) -> torch.Tensor:
        # Padding: a padded key (position >= T) is visible only to later positions, i.e. to padded queries, which
        # are cut off at the end, so it needs no mask.
        t = F.pad(t, (0, 0, 0, 0, 0, pad)) if pad else t
        return t.view(B, nb, l, H, D).permute(0, 3, 1, 2, 4).contiguous()  # (B, H, nb, l, D): row b, column r

    qg, kg, vg = grid(q), grid(k), grid(v)
    kt = kg.transpose(-2, -1)  # (B, H, nb, D, l)
    own = qg @ kt  # (B, H, nb, l, l): row b against itself
    prev = F.pad(qg[:, :, 1:] @ kt[:, :, :-1], (0, 0, 0, 0, 1, 0))  # (B, H, nb, l, l): against row b-1 (none for 0)
    # Column r: rows b' against rows b. (B, H, l, nb, nb) -> (B, H, nb, l, nb): query (b, r), key row b'.
    strided = (qg.transpose(2, 3) @ kg.transpose(2, 3).transpose(-2, -1)).transpose(2, 3)

    r = torch.arange(l, device=dev)
    b = torch.arange(nb, device=dev)
    ok_prev = (r[None, :] > r[:, None]).expand(nb, l, l) & (b > 0)[:, None, None]  # (b-1)*l + j > i - l
    ok_own = (r[None, :] <= r[:, None]).expand(nb, l, l)  # causal within the row
    ok_strided = (b[None, :] < b[:, None])[:, None, :].expand(nb, l, nb)  # i - k*l, k >= 1 (k = 0 is in `own`)
    ok = torch.cat([ok_prev, ok_own, ok_strided], dim=-1)  # (nb, l, 2l + nb)
    scores = torch.cat([prev, own, strided], dim=-1) * (1.0 / math.sqrt(D))  # (B, H, nb, l, 2l + nb)
    w_prev, w_own, w_strided = scores.masked_fill(~ok, float("-inf")).softmax(dim=-1).split([l, l, nb], dim=-1)

    out = w_own @ vg  # (B, H, nb, l, D)
    out = out + (w_strided.transpose(2, 3) @ vg.transpose(2, 3)).transpose(2, 3)  # per column: (B, H, l, nb, D)
    out[:, :, 1:] += w_prev[:, :, 1:] @ vg[:, :, :-1]
    out = out.permute(0, 2, 3, 1, 4).reshape(B, nb * l, H, D)  # (B, nb*l, H, D), back to positions
    return out[:, :T]


# ---- catalogue entries (op_speed, and the operator-scope scaling entry of long_context) -----------------------------
from .catalog import register_op, register_op_impl  # noqa: E402


@register_op("sparse_transformer", fast="blocked")
def make_strided_inputs(B: int, T: int, H: int, D: int, dtype: torch.dtype, device: torch.device,
                        generator: torch.Generator) -> dict:
    """Gaussian q, k, v (B, T, H, D) and the paper's stride ceil(sqrt(T))."""
    def randn():
        return torch.randn(B, T, H, D, generator=generator, dtype=torch.float32).to(device, dtype)
    return {"q": randn(), "k": randn(), "v": randn(), "stride": default_stride(T)}


@register_op_impl("sparse_transformer", "blocked", source="ours")
def _strided_blocked(inputs: dict) -> torch.Tensor:
    return strided_sparse_attention(**inputs)


@register_op_impl("sparse_transformer", "naive", source="ours")
def _strided_naive(inputs: dict) -> torch.Tensor:
    return naive_strided_sparse_attention(**inputs)
