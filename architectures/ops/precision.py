"""The precision rule of every op and mixer: compute in fp32 *at least*, never *at most*.

Gates, normalisations, decays and accumulations of half-precision inputs run in fp32 (bf16/fp16 have 8/11 bits of
mantissa); fp32 inputs run in fp32; fp64 inputs run in fp64. A ``.float()`` cast would do the first and silently cap
an fp64 run at fp32 resolution (~1e-7), so the code says ``upcast(x)`` (or ``x.to(promote(x))``) instead. Tables
(RoPE angles, sinusoids, decays) are built in the promoted dtype of the tensor they apply to.
"""
from __future__ import annotations

import torch


def promote(x: torch.Tensor | torch.dtype) -> torch.dtype:
    """The compute dtype of a tensor or dtype: itself if at least fp32 (fp32, fp64), else fp32."""
    dtype = x.dtype if isinstance(x, torch.Tensor) else x
    return torch.promote_types(dtype, torch.float32)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """x in its compute dtype (``promote``): bf16/fp16 -> fp32, fp32 and fp64 unchanged."""
    return x.to(promote(x.dtype))
