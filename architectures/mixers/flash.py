"""Flash attention: exact softmax attention computed in tiles by a fused kernel, O(n^2 d) time and O(n) memory.

We call PyTorch's ``scaled_dot_product_attention`` pinned to one backend per impl (``sdpa_flash`` = the
FlashAttention kernel, on CPU its tiled CPU port; ``sdpa_efficient`` = memory-efficient attention; ``sdpa_cudnn``).
Nothing falls back by shape: if the pinned backend cannot run, the cell is skipped with PyTorch's reason.
The harness records the aten op that actually ran (``sdpa_backend`` in every result row).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from ._kv_attention import KVCacheAttention

SDPA_BACKENDS = {
    "sdpa_flash": SDPBackend.FLASH_ATTENTION,
    "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION,
}


@functools.lru_cache(maxsize=None)
def sdpa_unavailable_reason(impl: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Run a tiny causal SDPA call (forward and backward) under the pinned backend; return PyTorch's error if any."""
    q = torch.randn(1, 2, 8, 16, device=device, dtype=dtype, requires_grad=True)
    try:
        with sdpa_kernel([SDPA_BACKENDS[impl]]):
            F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
    except RuntimeError as err:
        return f"SDPA backend {SDPA_BACKENDS[impl].name} unavailable on {device}/{dtype}: {str(err).splitlines()[0]}"
    return None


@register_mixer("flash", spec=MixerSpec(
    family="softmax attention",
    paper=Paper("FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness", "2205.14135", 2022),
    claimed_time="O(n^2 d)", claimed_memory="O(n)",
    time_exponent=2, memory_exponent=1, state_exponent=1,
    claimed_quality="100%",
    modes=frozenset({"causal", "bidirectional", "decode"}),
    impls=("sdpa_flash", "sdpa_efficient", "sdpa_cudnn"),
    default_hparams={"rope_theta": 10000.0},
    notes="Same math as standard, tiled; the guide also claims '2-4x faster'.",
))
class FlashAttention(KVCacheAttention):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 rope_theta: float | None = 10000.0):
        super().__init__(d_model, n_heads, causal=causal, impl=impl, n_kv_heads=n_heads, rope_theta=rope_theta)

    @classmethod
    def unavailable_reason(cls, impl: str, device: torch.device, dtype: torch.dtype) -> str | None:
        return sdpa_unavailable_reason(impl, device, dtype)

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        with sdpa_kernel([SDPA_BACKENDS[self.impl]]):
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=causal)  # (B, H, T, Dh)
        return o.transpose(1, 2)  # (B, T, H, Dh)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._sdpa(q, k, v, self.causal)

    def _attend_step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._sdpa(q, k, v, False)  # one query at the end sees the whole cache
