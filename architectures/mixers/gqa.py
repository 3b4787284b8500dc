"""Grouped-query attention (Ainslie et al. 2023): n_heads query heads share n_kv_heads key/value heads, so the KV
cache shrinks by n_kv_heads / n_heads. Multi-query attention is n_kv_heads=1; n_kv_heads=n_heads is standard MHA.

Two explicit impls of the same math: ``torch`` (explicit scores, like ``standard``) and ``sdpa_flash`` (PyTorch's fused
kernel with ``enable_gqa``, pinned to the flash backend; skipped where that backend is unavailable).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.softmax_attention import softmax_attention
from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from ._kv_attention import KVCacheAttention
from .flash import SDPA_BACKENDS, sdpa_unavailable_reason


@register_mixer("gqa", spec=MixerSpec(
    family="softmax attention",
    paper=Paper("GQA: Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints",
                "2305.13245", 2023),
    claimed_time="O(n^2 d)", claimed_memory=None,
    time_exponent=2, memory_exponent=None, state_exponent=1,
    claim_source="guide 003, Key techniques (GQA: balance between MHA and MQA); not in the Master Comparison Table",
    modes=frozenset({"causal", "bidirectional", "decode"}),
    impls=("torch", "sdpa_flash"),
    default_hparams={"n_kv_heads": 2, "rope_theta": 10000.0, "d_head": None},
    test_hparams={"n_kv_heads": 1},
    notes="KV cache = n_kv_heads / n_heads of standard's. MQA is n_kv_heads=1. rope_theta None: no positions "
          "(Jamba's attention layers). d_head None: d_model / n_heads.",
))
class GroupedQueryAttention(KVCacheAttention):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 n_kv_heads: int = 2, rope_theta: float | None = 10000.0, d_head: int | None = None):
        # d_head None: d_model / n_heads; PaLM-540B sets 256 (48 heads at d_model 18432)
        super().__init__(d_model, n_heads, causal=causal, impl=impl, n_kv_heads=n_kv_heads, rope_theta=rope_theta,
                         head_dim=d_head)
        self.n_kv_heads, self.d_head = n_kv_heads, d_head

    @classmethod
    def unavailable_reason(cls, impl: str, device: torch.device, dtype: torch.dtype) -> str | None:
        return sdpa_unavailable_reason(impl, device, dtype) if impl.startswith("sdpa_") else None

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.impl == "torch":
            return softmax_attention(q, k, v, causal=self.causal)
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel([SDPA_BACKENDS[self.impl]]):
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=self.causal, enable_gqa=True)  # (B, H, T, Dh)
        return o.transpose(1, 2)

    def _attend_step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.impl == "torch":
            return softmax_attention(q, k, v, causal=False)
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel([SDPA_BACKENDS[self.impl]]):
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               enable_gqa=True)  # one query at the end sees the whole cache
        return o.transpose(1, 2)
