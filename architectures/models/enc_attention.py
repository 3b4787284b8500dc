"""Multi-head attention of the encoder, encoder-decoder and vision stacks: self-attention and cross-attention.

Why not a registered mixer: the Mixer contract is ``forward(x)`` over one sequence, while the decoder of an
encoder-decoder attends from its own tokens to a second sequence (the encoder's output), and T5 adds a learned
position bias to the scores before the softmax. The math is the same explicit softmax attention as the ``standard``
mixer (tests hold a bias-free, position-free self-attention equal to ``standard`` with ``rope_theta=None``):

    scores = Q K^T * scale + bias        Q from x (B, T, D); K, V from memory (B, S, D) (memory = x for self-attention)
    out    = softmax(scores, masked if causal) V,  concatenated heads, output projection

``bias``: linear biases (BERT, ViT, Transformer-base) or none (T5). ``scale``: 1/sqrt(d_head) (Vaswani) or 1 (T5
folds it into the initialisation). ``d_head``: T5's d_kv, which need not be d_model / n_heads.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_head: int | None = None, *, bias: bool = True,
                 scaled: bool = True):
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_head or d_model // n_heads
        inner = n_heads * self.d_head
        self.scale = 1.0 / math.sqrt(self.d_head) if scaled else 1.0
        self.wq = nn.Linear(d_model, inner, bias=bias)
        self.wk = nn.Linear(d_model, inner, bias=bias)
        self.wv = nn.Linear(d_model, inner, bias=bias)
        self.wo = nn.Linear(inner, d_model, bias=bias)

    def _heads(self, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        return proj(x).view(*x.shape[:2], self.n_heads, self.d_head).transpose(1, 2)  # (B,T,H*Dh) -> (B,H,T,Dh)

    def kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of memory (B, S, D): two (B, H, S, Dh). A decoder caches them (cross-attention: once)."""
        return self._heads(memory, self.wk), self._heads(memory, self.wv)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
               position_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Queries of x (B, T, D) against k, v (B, H, S, Dh). Causal: query i is the (S - T + i)-th position, so T
        new tokens after S - T cached ones see the cache and themselves up to i; position_bias: (H, T, S)."""
        q = self._heads(x, self.wq)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, T, S)
        if position_bias is not None:
            scores = scores + position_bias.to(scores.dtype)
        if causal:
            T, S = scores.shape[-2:]
            future = torch.ones(T, S, dtype=torch.bool, device=x.device).triu(S - T + 1)
            scores = scores.masked_fill(future, float("-inf"))
        out = scores.softmax(dim=-1) @ v  # (B, H, T, Dh)
        return self.wo(out.transpose(1, 2).reshape(*x.shape[:2], -1))  # (B, H, T, Dh) -> (B, T, H*Dh) -> (B, T, D)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None, *, causal: bool = False,
                position_bias: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, D); memory: (B, S, D) or None (self-attention); position_bias: (H, T, S) added to the scores."""
        return self.attend(x, *self.kv(x if memory is None else memory), causal=causal, position_bias=position_bias)


class RelativePositionBias(nn.Module):
    """T5's learned relative position bias (Raffel et al. 2020, sec. 2.1): one scalar per head and bucket of the
    distance key - query; buckets are exact for small distances and logarithmic up to ``max_distance``.
    Bidirectional (encoder) buckets split by sign; causal (decoder) buckets only look back."""

    def __init__(self, n_heads: int, n_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        self.n_buckets, self.max_distance, self.bidirectional = n_buckets, max_distance, bidirectional
        self.table = nn.Embedding(n_buckets, n_heads)

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        """relative = key position - query position (any shape, int64) -> bucket index, same shape."""
        n = self.n_buckets
        out = torch.zeros_like(relative)
        if self.bidirectional:
            n //= 2
            out = out + (relative > 0).long() * n
            relative = relative.abs()
        else:
            relative = -torch.clamp(relative, max=0)
        exact = n // 2
        is_small = relative < exact
        log_ratio = torch.log(relative.float().clamp(min=1) / exact) / math.log(self.max_distance / exact)
        large = exact + (log_ratio * (n - exact)).long()
        large = torch.clamp(large, max=n - 1)
        return out + torch.where(is_small, relative, large)

    def forward(self, T: int, S: int, device: torch.device, query_start: int = 0) -> torch.Tensor:
        """(H, T, S) bias of queries at positions query_start..query_start+T-1 against keys 0..S-1."""
        queries = torch.arange(query_start, query_start + T, device=device)
        relative = torch.arange(S, device=device)[None, :] - queries[:, None]  # (T, S)
        return self.table(self.bucket(relative)).permute(2, 0, 1)  # (T, S, H) -> (H, T, S)
