"""ALiBi: attention with linear biases (Press et al., "Train Short, Test Long", arXiv:2108.12409).

No position embeddings at all: each head h adds ``-m_h * (i - j)`` to the score of query i and key j <= i, with the
head slopes a geometric sequence ``m_h = 2^(-8 (h+1) / H)`` (for H a power of two; otherwise the paper's
interleaving of the slopes of the next lower and higher powers of two). On (B, T, H, D) tensors.
``naive_alibi_attention`` is the fp32 loop that reads like the formula; ``alibi_attention`` the explicit matrix form.
"""
from __future__ import annotations

import math

import torch

from .. import flop_notes


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """(H,) fp32 slopes: 2^(-8/H), 2^(-16/H), ... (the reference implementation's rule for any H)."""
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(power_of_two(n_heads))
    closest = 2 ** math.floor(math.log2(n_heads))
    extra = power_of_two(2 * closest)[0::2][:n_heads - closest]
    return torch.tensor(power_of_two(closest) + extra)


def naive_alibi_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True,
                          q_offset: int = 0) -> torch.Tensor:
    """q: (B, T, H, D); k, v: (B, S, H, D). Query t sits at position q_offset + t and sees keys s <= it (causal) or
    all keys, with score q.k / sqrt(D) - m_h |pos - s|. Returns (B, T, H, D) in fp32."""
    q, k, v = q.float(), k.float(), v.float()
    B, T, H, D = q.shape
    S = k.shape[1]
    slopes = alibi_slopes(H)
    out = torch.zeros(B, T, H, D)
    for t in range(T):
        pos = q_offset + t
        visible = torch.tensor([s for s in range(S) if not causal or s <= pos], dtype=torch.long)
        for h in range(H):
            scores = torch.einsum("bd,bsd->bs", q[:, t, h], k[:, visible, h]) / math.sqrt(D)
            scores = scores - slopes[h] * (pos - visible).abs().float()
            out[:, t, h] = torch.einsum("bs,bsd->bd", scores.softmax(dim=-1), v[:, visible, h])
    return out


def alibi_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
    """The same as the loop, with the (T, S) score matrix of every head. With S > T the queries are the last T
    positions (decoding against a cache)."""
    B, T, H, D = q.shape
    S = k.shape[1]
    q_pos = torch.arange(S - T, S, device=q.device)  # (T,) absolute positions of the queries
    distance = (q_pos[:, None] - torch.arange(S, device=q.device)[None, :]).abs()  # (T, S)
    bias = -alibi_slopes(H).to(q.device)[:, None, None] * distance  # (H, T, S)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D) + bias.to(q.dtype)  # (B, H, T, S)
    if causal:
        future = torch.ones(T, S, dtype=torch.bool, device=q.device).triu(S - T + 1)
        flop_notes.masked_scores(scores, discarded=future, d_qk=D, d_v=v.shape[-1])  # computed, then discarded
        scores = scores.masked_fill(future, float("-inf"))
    return torch.einsum("bhts,bshd->bthd", scores.softmax(dim=-1), v)  # (B, T, H, D)
