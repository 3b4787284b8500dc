"""FLOP notes: an op that computes a block of attention scores and then masks part of it says so here.

PyTorch's FLOP counter sees the matrix products an op executes, not which of their entries a mask then discards.
Exact causal attention computed explicitly (``standard``: the whole n x n matrix, then the causal mask) executes
twice the products its algorithm needs; a fused causal kernel (FlashAttention) skips the masked blocks. So that both
are counted alike, an op calls ``masked_scores`` on the score tensor it is about to mask, and the harness
(``harness.measure``, whose ``FLOP_CONVENTION`` states the convention) subtracts that work from the executed count
to give the algorithmic one. Outside a measurement nothing listens and a call costs one empty loop.
"""
from __future__ import annotations

from typing import Callable

import torch

# Callables (scores, kept, discarded, d_qk, d_v) -> None, installed by harness.measure while it counts FLOPs.
LISTENERS: list[Callable[..., None]] = []


def masked_scores(scores: torch.Tensor, *, kept: torch.Tensor | None = None, discarded: torch.Tensor | None = None,
                  d_qk: int, d_v: int) -> None:
    """``scores``: a computed (..., queries, keys) score tensor about to be masked; ``kept`` (True where the entry
    stays) or ``discarded`` (True where it is set to -inf): the op's own bool mask, broadcastable to ``scores``.
    ``d_qk``: the contraction length of the products that made one score (summed over them, e.g. content + position
    terms); ``d_v``: that of the product that applies one weight to the values. The wasted work is
    2 * (d_qk + d_v) FLOPs per discarded entry forward, twice that backward. Pass the mask the op already has, so
    that a note allocates nothing."""
    if (kept is None) == (discarded is None):
        raise ValueError("masked_scores: pass exactly one of kept= and discarded=")
    for listener in LISTENERS:
        listener(scores, kept, discarded, d_qk, d_v)
