"""Sliding-window attention (Longformer's local attention, Mistral's SWA): each token attends to the `window` most
recent tokens, itself included. Computed block-locally (``ops.sliding_window``): O(n w d) time and O(n w) memory,
never an n x n matrix. Decoding keeps a rolling cache of the last window - 1 keys and values, so the state stops
growing at the window."""
from __future__ import annotations

import torch

from ..ops.sliding_window import sliding_window_attention
from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from ._kv_attention import KVCacheAttention


@register_mixer("sliding_window", spec=MixerSpec(
    family="sparse attention",
    paper=Paper("Longformer: The Long-Document Transformer", "2004.05150", 2020),
    claimed_time="O(nwd)", claimed_memory="O(nw)",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claimed_quality="~98%",
    modes=frozenset({"causal", "decode"}),
    impls=("torch",),
    default_hparams={"window": 128, "rope_theta": 10000.0, "n_kv_heads": None},
    test_hparams={"window": 16},
    notes="Window counts the token itself: query t sees keys t-window+1..t.",
))
class SlidingWindowAttention(KVCacheAttention):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 window: int = 128, rope_theta: float | None = 10000.0, n_kv_heads: int | None = None):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        # n_kv_heads None: one KV head per query head; Mistral-7B shares 8 KV heads among 32 (GQA)
        super().__init__(d_model, n_heads, causal=causal, impl=impl, n_kv_heads=n_kv_heads or n_heads,
                         rope_theta=rope_theta, cache_window=window)
        self.window, self.n_kv_heads = window, n_kv_heads

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.kv_heads != self.n_heads:  # shared KV heads: each query head reads its group's (a copy per head)
            B, T, H_kv, Dh = k.shape
            G = self.n_heads // H_kv
            k = k[:, :, :, None].expand(B, T, H_kv, G, Dh).reshape(B, T, self.n_heads, Dh)  # (B, T, H, Dh)
            v = v[:, :, :, None].expand(B, T, H_kv, G, Dh).reshape(B, T, self.n_heads, Dh)
        return sliding_window_attention(q, k, v, self.window)

    def _reference_window(self) -> int | None:
        return self.window
