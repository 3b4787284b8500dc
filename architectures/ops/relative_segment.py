"""Transformer-XL attention (Dai et al. 2019, arXiv:1901.02860): segment-level recurrence with relative positions.

The sequence is cut into segments of L tokens. A query at position i of the segment that starts at s attends to the
memory, the M positions s - M .. s - 1 before its segment (cached from earlier segments, stop-gradient), and causally
to its own segment: keys j with max(0, s - M) <= j <= i. Scores use the paper's relative encoding (section 3.3):

    A_ij = q_i^T k_j  +  q_i^T W_kR R_{i-j}  +  u^T k_j  +  v^T W_kR R_{i-j}          (a) + (b) + (c) + (d)

with R the sinusoid of the distance i - j, W_kR its key projection and u, v learned per-head biases; the ops take
``r = W_kR R_d`` for the distances d = 0 .. M + L - 1 as an (M + L, H, D) tensor, and scale A by 1 / sqrt(D) as the
authors' code does. Memory keys and values come from ``k_mem``, ``v_mem`` (the projections of the stop-gradient
memory); keys of the query's own segment from ``k``, ``v`` (pass the same tensors when no gradient is needed).

``naive_rel_segment_attention`` is the oracle loop with the four terms spelled out. ``rel_segment_attention`` batches
all segments: keys (B, H, n/L, L, M + L), i.e. O(n (M + L) d) time and O(n (M + L)) memory, linear in n for fixed
L and M; the positional term is computed once per distance and gathered to (query, key) pairs (the explicit form of
the paper's "shift" trick).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import flop_notes


def sinusoid_embedding(distances: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """R_d as in the paper's code: [sin(d f), cos(d f)] with f_i = 1 / 10000^(2i/dim). distances (S,) -> (S, dim),
    built in ``dtype`` (pass the promoted dtype of the weights: fp64 runs get an fp64 table)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=distances.device, dtype=dtype) / dim))
    angles = distances.to(dtype)[:, None] * inv_freq[None, :]  # (S, ceil(dim/2))
    return torch.cat([angles.sin(), angles.cos()], dim=-1)[:, :dim]


def naive_rel_segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_mem: torch.Tensor,
                                v_mem: torch.Tensor, r: torch.Tensor, u: torch.Tensor, v_bias: torch.Tensor, *,
                                segment_len: int, mem_len: int) -> torch.Tensor:
    """q, k, v, k_mem, v_mem: (B, T, H, D); r: (mem_len + segment_len, H, D); u, v_bias: (H, D) -> (B, T, H, D)."""
    q, k, v, k_mem, v_mem, r, u, v_bias = (t.float() for t in (q, k, v, k_mem, v_mem, r, u, v_bias))
    B, T, H, D = q.shape
    out = torch.zeros(B, T, H, v.shape[-1])
    for i in range(T):
        s = (i // segment_len) * segment_len  # start of the query's segment
        j = torch.arange(max(0, s - mem_len), i + 1)  # the visible keys: memory, then the segment up to i
        from_mem = (j < s)[None, :, None]  # (1, S, 1)
        for h in range(H):
            kj = torch.where(from_mem, k_mem[:, j, h], k[:, j, h])  # (B, S, D)
            vj = torch.where(from_mem, v_mem[:, j, h], v[:, j, h])
            rij = r[i - j, h]  # (S, D): W_kR R_{i-j}
            a = torch.einsum("bd,bsd->bs", q[:, i, h], kj)  # (a) content
            b = torch.einsum("bd,sd->bs", q[:, i, h], rij)  # (b) content-dependent position
            c = torch.einsum("d,bsd->bs", u[h], kj)  # (c) global content bias
            d = torch.einsum("d,sd->s", v_bias[h], rij)[None]  # (d) global position bias
            p = ((a + b + c + d) / math.sqrt(D)).softmax(dim=-1)  # (B, S)
            out[:, i, h] = torch.einsum("bs,bsd->bd", p, vj)
    return out


def _windows(x: torch.Tensor, x_mem: torch.Tensor, L: int, M: int, n_seg: int) -> torch.Tensor:
    """Per segment, the M memory rows before it (from x_mem) and its own L rows (from x): (B, H, n_seg, M + L, D)."""
    B, T, H, D = x.shape
    pad = n_seg * L - T
    mem = F.pad(x_mem, (0, 0, 0, 0, M, pad))  # (B, M + n_seg*L, H, D): row M + t is position t
    mem = mem.unfold(1, M, L)[:, :n_seg]  # (B, n_seg, H, D, M): rows [tau*L, tau*L + M) = positions tau*L - M ..
    own = F.pad(x, (0, 0, 0, 0, 0, pad)).view(B, n_seg, L, H, D)  # (B, n_seg, L, H, D)
    keys = torch.cat([mem.permute(0, 1, 4, 2, 3), own], dim=2)  # (B, n_seg, M + L, H, D)
    return keys.permute(0, 3, 1, 2, 4)  # (B, H, n_seg, M + L, D)


def rel_segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_mem: torch.Tensor,
                          v_mem: torch.Tensor, r: torch.Tensor, u: torch.Tensor, v_bias: torch.Tensor, *,
                          segment_len: int, mem_len: int) -> torch.Tensor:
    """The fast form of ``naive_rel_segment_attention``, same signature."""
    B, T, H, D = q.shape
    L, M = segment_len, mem_len
    n_seg = -(-T // L)
    pad = n_seg * L - T
    dev = q.device
    qs = F.pad(q, (0, 0, 0, 0, 0, pad)).view(B, n_seg, L, H, D).permute(0, 3, 1, 2, 4)  # (B, H, n_seg, L, D)
    keys = _windows(k, k_mem, L, M, n_seg)  # (B, H, n_seg, M + L, D)
    values = _windows(v, v_mem, L, M, n_seg)
    ac = (qs + u[:, None, None, :]) @ keys.transpose(-2, -1)  # (a) + (c): (B, H, n_seg, L, M + L)
    # (b) + (d) against every distance once, then gathered: query row t, key column j is at distance t + M - j.
    bd = (qs + v_bias[:, None, None, :]) @ r.permute(1, 2, 0)[:, None]  # (B, H, n_seg, L, M + L): by distance
    t = torch.arange(L, device=dev)[:, None]
    j = torch.arange(M + L, device=dev)[None, :]
    dist = t + M - j  # (L, M + L)
    bd = bd.gather(-1, dist.clamp(0, M + L - 1).expand(B, H, n_seg, L, M + L))
    scores = (ac + bd) / math.sqrt(D)
    # Visible: causal (distance >= 0) and not before position 0 (segment start tau*L, key position tau*L - M + j).
    start = torch.arange(n_seg, device=dev)[:, None, None] * L  # (n_seg, 1, 1)
    ok = (dist >= 0) & (start - M + j >= 0)  # (n_seg, L, M + L)
    flop_notes.masked_scores(scores, kept=ok, d_qk=2 * D, d_v=D)  # content and position products, then values
    scores = scores.masked_fill(~ok, float("-inf"))
    out = scores.softmax(dim=-1) @ values  # (B, H, n_seg, L, D)
    return out.permute(0, 2, 3, 1, 4).reshape(B, n_seg * L, H, D)[:, :T]  # (B, T, H, D)


def rel_attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, r: torch.Tensor, u: torch.Tensor,
                       v_bias: torch.Tensor) -> torch.Tensor:
    """One query, the newest position, against its S visible keys, oldest first (the last one is its own).
    q: (B, H, D); k, v: (B, S, H, D); r: (>= S, H, D) by distance -> (B, H, D)."""
    S, D = k.shape[1], q.shape[-1]
    r_keys = r[:S].flip(0)  # (S, H, D): key s is at distance S - 1 - s
    ac = torch.einsum("bhd,bshd->bhs", q + u, k)
    bd = torch.einsum("bhd,shd->bhs", q + v_bias, r_keys)
    p = ((ac + bd) / math.sqrt(D)).softmax(dim=-1)  # (B, H, S)
    return torch.einsum("bhs,bshd->bhd", p, v)
