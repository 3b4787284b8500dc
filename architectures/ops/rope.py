"""Rotary position embedding (RoFormer, arXiv:2104.09864) on (B, T, H, D) tensors, rotating pairs (i, i + D/2)."""
from __future__ import annotations

import torch

from .precision import promote


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (T, 1, D) for integer positions (T,), built in ``promote(dtype)`` (fp32 for half
    precision, fp64 for fp64) and cast to ``dtype``."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    cd = promote(dtype)
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=cd) / head_dim)
    angles = positions.to(cd)[:, None] * inv_freq[None, :]  # (T, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, D)
    return angles.cos().to(dtype)[:, None, :], angles.sin().to(dtype)[:, None, :]  # (T, 1, D): broadcast over heads


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """x: (B, T, H, D); positions: (T,) absolute positions of the T tokens."""
    cos, sin = rope_cos_sin(positions, x.shape[-1], theta, x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin
