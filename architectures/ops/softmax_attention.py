"""Exact softmax attention, softmax(Q K^T / sqrt(d)) V, on (B, T, H, D) tensors.

``naive_softmax_attention`` is the oracle: a loop over query positions in fp32 that reads like the formula, with the
optional causal mask, sliding window and grouped KV heads spelled out. ``softmax_attention`` is the guide's explicit
form: it materialises the (T, S) score matrix per head, so it costs O(T S d) time and O(T S) memory.
"""
from __future__ import annotations

import math

import torch

from .. import flop_notes


def naive_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                            window: int | None = None, q_offset: int = 0) -> torch.Tensor:
    """q: (B, T, H, D); k, v: (B, S, H_kv, D) with H a multiple of H_kv (query head h reads KV head h // (H/H_kv)).

    Query t sits at absolute position q_offset + t and sees key s when (not causal or s <= pos) and
    (window is None or pos - s < window). Returns (B, T, H, D) in fp32.
    """
    q, k, v = q.float(), k.float(), v.float()
    B, T, H, D = q.shape
    S, H_kv = k.shape[1], k.shape[2]
    group = H // H_kv
    out = torch.zeros(B, T, H, v.shape[-1])
    for t in range(T):
        pos = q_offset + t
        visible = [s for s in range(S) if (not causal or s <= pos) and (window is None or pos - s < window)]
        idx = torch.tensor(visible, dtype=torch.long)
        for h in range(H):
            kh = k[:, idx, h // group, :]  # (B, |visible|, D)
            vh = v[:, idx, h // group, :]
            scores = torch.einsum("bd,bsd->bs", q[:, t, h, :], kh) / math.sqrt(D)
            out[:, t, h, :] = torch.einsum("bs,bsd->bd", scores.softmax(dim=-1), vh)
    return out


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """Explicit attention (the guide's code). q: (B, T, H, D); k, v: (B, S, H_kv, D), H a multiple of H_kv.

    Grouped KV heads are read in place (query heads of a group share one K/V head), never copied per query head.
    With causal=True and S > T the queries are the last T positions (decoding with a cache).
    """
    B, T, H, D = q.shape
    S, H_kv = k.shape[1], k.shape[2]
    G = H // H_kv
    q = q.view(B, T, H_kv, G, D).permute(0, 2, 3, 1, 4).reshape(B, H_kv, G * T, D)  # a group's queries stacked
    k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, H_kv, S, D)
    scores = (q @ k.transpose(-2, -1)).view(B, H_kv, G, T, S) / math.sqrt(D)  # the n x n matrix of every head
    if causal:
        future = torch.ones(T, S, dtype=torch.bool, device=q.device).triu(S - T + 1)
        flop_notes.masked_scores(scores, discarded=future, d_qk=D, d_v=v.shape[-1])  # computed, then discarded
        scores = scores.masked_fill(future, float("-inf"))
    weights = scores.softmax(dim=-1).view(B, H_kv, G * T, S)
    out = (weights @ v).view(B, H_kv, G, T, D)
    return out.permute(0, 3, 1, 2, 4).reshape(B, T, H, D)  # (B, T, H_kv, G, D) -> (B, T, H, D)
