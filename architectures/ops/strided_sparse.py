"""The Sparse Transformer's strided pattern (Child et al. 2019, arXiv:1904.10509, section 4.2, Figure 3b), causal.

With stride l the paper factorises full attention into two heads' patterns:

    A(1)_i = {j : i - l < j <= i}                    "local": the previous l positions, itself included
    A(2)_i = {j : j <= i and (i - j) mod l = 0}      "strided": every l-th position back from i

and integrates them as separate heads of one multi-head layer (section 4.3, the third option: "n_h attention
products ... computed in parallel, then concatenated"): the first H - H//2 heads use A(1), the last H//2 heads use A(2).
Together the two heads connect every i to every j <= i in two steps. With l ~ sqrt(n) each head reads ~ sqrt(n) keys
per query, so a layer costs O(n sqrt(n) d) time and O(n sqrt(n)) memory.

``naive_strided_sparse_attention`` is the oracle loop. ``strided_sparse_attention`` computes on gathered blocks, never
an n x n matrix: the local heads block-locally (``ops.sliding_window``, blocks of l queries against 2l keys), the
strided heads by reading the sequence as an (n/l, l) grid whose column r holds the positions = r (mod l), so that each
column is a causal attention over n/l positions: scores (B, H, l, n/l, n/l), i.e. n^2 / l = n sqrt(n) entries.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .sliding_window import sliding_window_attention


def default_stride(seq_len: int) -> int:
    """The paper's l ~ sqrt(n): ceil(sqrt(n)) (at least 1)."""
    return max(1, math.isqrt(max(seq_len, 1) - 1) + 1)


def n_local_heads(n_heads: int) -> int:
    """Heads [0, n_local) use the local pattern A(1), heads [n_local, H) the strided pattern A(2)."""
    return n_heads - n_heads // 2


def naive_strided_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, stride: int) -> torch.Tensor:
    """q, k, v: (B, T, H, D) -> (B, T, H, D) in fp32; a loop over queries and heads, the visible sets as in the paper."""
    q, k, v = q.float(), k.float(), v.float()
    B, T, H, D = q.shape
    n_local = n_local_heads(H)
    out = torch.zeros(B, T, H, v.shape[-1])
    for i in range(T):
        for h in range(H):
            if h < n_local:
                visible = [j for j in range(T) if i - stride < j <= i]  # A(1)
            else:
                visible = [j for j in range(T) if j <= i and (i - j) % stride == 0]  # A(2)
            idx = torch.tensor(visible, dtype=torch.long)
            scores = torch.einsum("bd,bsd->bs", q[:, i, h], k[:, idx, h]) / math.sqrt(D)
            out[:, i, h] = torch.einsum("bs,bsd->bd", scores.softmax(dim=-1), v[:, idx, h])
    return out


def strided_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, stride: int) -> torch.Tensor:
    """Causal attention of position i to the positions i, i - l, i - 2l, ... only. q, k, v: (B, T, H, D)."""
    B, T, H, D = q.shape
    l = stride
    n_blocks = -(-T // l)
    pad = n_blocks * l - T
    # Pad T to whole rows of l. A padded key (position >= T) is only visible to a later position of its column, i.e.
    # to padded queries, which are cut off at the end: no mask needed for padding.
    q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
    # Position b*l + r sits at row b, column r; column r gathers the positions = r (mod l).
    q = q.view(B, n_blocks, l, H, D).permute(0, 3, 2, 1, 4)  # (B, H, l, nb, D): per column, its nb positions
    k = k.view(B, n_blocks, l, H, D).permute(0, 3, 2, 1, 4)
    v = v.view(B, n_blocks, l, H, D).permute(0, 3, 2, 1, 4)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, l, nb, nb): within a column, row b' vs row b
    future = torch.ones(n_blocks, n_blocks, dtype=torch.bool, device=q.device).triu(1)  # b' > b
    scores = scores.masked_fill(future, float("-inf"))
    out = scores.softmax(dim=-1) @ v  # (B, H, l, nb, D)
    out = out.permute(0, 3, 2, 1, 4).reshape(B, n_blocks * l, H, D)  # (B, nb*l, H, D), back to positions
    return out[:, :T]


def strided_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, stride: int) -> torch.Tensor:
    """The fast form of ``naive_strided_sparse_attention``. q, k, v: (B, T, H, D) -> (B, T, H, D)."""
    n_local = n_local_heads(q.shape[2])
    local = sliding_window_attention(q[:, :, :n_local], k[:, :, :n_local], v[:, :, :n_local], stride)
    strided = strided_attention(q[:, :, n_local:], k[:, :, n_local:], v[:, :, n_local:], stride)
    return torch.cat([local, strided], dim=2)  # (B, T, H, D)

