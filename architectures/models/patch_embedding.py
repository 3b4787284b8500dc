"""ViT's patch embedding (Dosovitskiy et al. 2020, eq. 1): the image cut into P x P patches, each flattened and
projected to d_model; written as a Conv2d with kernel = stride = P, which is exactly that linear map per patch."""
from __future__ import annotations

import torch
from torch import nn


class PatchEmbedding(nn.Module):
    def __init__(self, image_size: int, patch_size: int, n_channels: int, d_model: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not a multiple of patch_size={patch_size}")
        self.n_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(n_channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) -> patch vectors (B, N, D), patches in row-major order."""
        return self.proj(images).flatten(2).transpose(1, 2)  # (B, D, H/P, W/P) -> (B, D, N) -> (B, N, D)
