"""Normalisation layers of the model stacks: RMSNorm (LLaMA, Mistral, DeepSeek, Jamba, Kimi) and LayerNorm (GPT-2,
BERT, PaLM without bias). RMSNorm computes in fp32 and casts back, as Hugging Face's LlamaRMSNorm does."""
from __future__ import annotations

import torch
from torch import nn

NORMS = ("rms", "layer")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def make_norm(kind: str, dim: int, eps: float, bias: bool = True) -> nn.Module:
    """kind "rms" (no bias ever) or "layer" (LayerNorm; ``bias=False`` is PaLM's)."""
    if kind == "rms":
        return RMSNorm(dim, eps)
    if kind == "layer":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")
