"""Standard multi-head softmax attention, computed explicitly as in the guide's code: the (T, T) score matrix of
every head is materialised, so time is O(n^2 d) and memory O(n^2)."""
from __future__ import annotations

import torch

from ..ops.softmax_attention import softmax_attention
from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from ._kv_attention import KVCacheAttention


@register_mixer("standard", spec=MixerSpec(
    family="softmax attention",
    paper=Paper("Attention Is All You Need", "1706.03762", 2017),
    claimed_time="O(n^2 d)", claimed_memory="O(n^2)",
    time_exponent=2, memory_exponent=2, state_exponent=1,
    claimed_quality="100%",
    modes=frozenset({"causal", "bidirectional", "decode"}),
    impls=("torch",),
    default_hparams={"rope_theta": 10000.0, "bias": False},
    notes="Explicit QK^T, mask, softmax, AV; decodes with a KV cache that grows with context.",
))
class StandardAttention(KVCacheAttention):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 rope_theta: float | None = 10000.0, bias: bool = False):
        # rope_theta None: no rotary positions (GPT-2/GPT-3 add learned absolute ones); bias: GPT-2/GPT-3's biases
        super().__init__(d_model, n_heads, causal=causal, impl=impl, n_kv_heads=n_heads, rope_theta=rope_theta,
                         bias=bias)
        self.bias = bias

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return softmax_attention(q, k, v, causal=self.causal)

    def _attend_cached(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return softmax_attention(q, k, v, causal=True)  # the T queries are the last T positions of the cache
