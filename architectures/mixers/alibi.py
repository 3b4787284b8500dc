"""Softmax attention with ALiBi positions (Press et al., 2022): the standard KV-cache attention without RoPE, the
score of query i and key j biased by ``-m_h |i - j|`` per head. It knows token order through that bias alone, so the
backbone adds no position embedding (``positions="own"``); the cache is the same as standard attention's."""
from __future__ import annotations

import torch

from ..ops.alibi import alibi_attention, naive_alibi_attention
from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from ._kv_attention import KVCacheAttention


@register_mixer("alibi", spec=MixerSpec(
    family="softmax attention",
    paper=Paper("Train Short, Test Long: Attention with Linear Biases Enables Input Length Extrapolation",
                "2108.12409", 2022),
    claimed_time="O(n^2 d)", claimed_memory="O(n^2)",
    time_exponent=2, memory_exponent=2, state_exponent=1,
    claimed_quality="100%",
    modes=frozenset({"causal", "bidirectional", "decode"}),
    impls=("torch",),
    default_hparams={},
    notes="Explicit attention with per-head linear distance biases instead of RoPE; decodes with a KV cache.",
))
class ALiBiAttention(KVCacheAttention):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None):
        super().__init__(d_model, n_heads, causal=causal, impl=impl, n_kv_heads=n_heads, rope_theta=None)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return alibi_attention(q, k, v, causal=self.causal)

    def _attend_step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return alibi_attention(q, k, v, causal=True)  # the query is the last position of the cache

    def _attend_cached(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return alibi_attention(q, k, v, causal=True)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, 0, fp32=True)
        return self._out(naive_alibi_attention(q, k, v, causal=self.causal), fp32=True)
