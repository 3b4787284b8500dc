"""Causal sliding-window attention: query t sees the `window` most recent keys s, t - window < s <= t.

``naive_sliding_window_attention`` is the oracle loop. ``sliding_window_attention`` is block-local: the sequence is
cut into blocks of `window` queries, and each block attends to its own keys and the previous block's (2 * window
keys), so the score tensor is (B, H, T, 2w): O(T w d) time and O(T w) memory, never a T x T matrix.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .softmax_attention import naive_softmax_attention


def naive_sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    return naive_softmax_attention(q, k, v, causal=True, window=window)


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """q, k, v: (B, T, H, D) -> (B, T, H, D)."""
    B, T, H, D = q.shape
    w = min(window, T)  # a window past the sequence is plain causal attention: blocks of T, not of a padded window
    n_blocks = -(-T // w)
    pad = n_blocks * w - T
    # Pad T up to whole blocks, and put one block of zero keys in front so that block 0 has a "previous" block.
    q = F.pad(q, (0, 0, 0, 0, 0, pad))
    k = F.pad(k, (0, 0, 0, 0, w, pad))
    v = F.pad(v, (0, 0, 0, 0, w, pad))
    q = q.view(B, n_blocks, w, H, D).permute(0, 3, 1, 2, 4)  # (B, H, nb, w, D)
    k = k.view(B, n_blocks + 1, w, H, D).permute(0, 3, 1, 2, 4)  # (B, H, nb+1, w, D)
    v = v.view(B, n_blocks + 1, w, H, D).permute(0, 3, 1, 2, 4)
    k2 = torch.cat([k[:, :, :-1], k[:, :, 1:]], dim=3)  # (B, H, nb, 2w, D): previous block, then own block
    v2 = torch.cat([v[:, :, :-1], v[:, :, 1:]], dim=3)
    scores = q @ k2.transpose(-2, -1) / math.sqrt(D)  # (B, H, nb, w, 2w)
    # Query r of block i is at i*w + r; key j of its 2w keys is at (i-1)*w + j. Visible iff r < j <= r + w,
    # and for block 0 the first w keys are padding (negative positions).
    r = torch.arange(w, device=q.device)[:, None]
    j = torch.arange(2 * w, device=q.device)[None, :]
    band = (j > r) & (j <= r + w)  # (w, 2w)
    mask = band.expand(n_blocks, w, 2 * w).clone()
    mask[0, :, :w] = False
    scores = scores.masked_fill(~mask, float("-inf"))
    out = scores.softmax(dim=-1) @ v2  # (B, H, nb, w, D)
    out = out.permute(0, 2, 3, 1, 4).reshape(B, n_blocks * w, H, D)  # (B, nb*w, H, D)
    return out[:, :T]


# ---- catalogue entries (op_speed, and the operator-scope scaling entry of long_context) -----------------------------
from .catalog import register_op, register_op_impl  # noqa: E402


@register_op("sliding_window", fast="blocked")
def make_window_inputs(B: int, T: int, H: int, D: int, dtype: torch.dtype, device: torch.device,
                       generator: torch.Generator) -> dict:
    """Gaussian q, k, v (B, T, H, D) and the mixer's default window, 128 (T // 4 on short inputs, so the band shows)."""
    def randn():
        return torch.randn(B, T, H, D, generator=generator, dtype=torch.float32).to(device, dtype)
    return {"q": randn(), "k": randn(), "v": randn(), "window": min(128, max(1, T // 4))}


@register_op_impl("sliding_window", "blocked", source="ours")
def _window_blocked(inputs: dict) -> torch.Tensor:
    return sliding_window_attention(**inputs)


@register_op_impl("sliding_window", "naive", source="ours")
def _window_naive(inputs: dict) -> torch.Tensor:
    return naive_sliding_window_attention(**inputs)
