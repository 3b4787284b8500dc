"""Dense feed-forward blocks (the "FFN" of each layer), by activation:

- "swiglu": down(silu(gate(x)) * up(x)) (Shazeer 2020; LLaMA, Mistral, PaLM, DeepSeek, Jamba, Kimi and the MoE experts);
- "gelu": down(gelu(up(x))) with the exact erf GELU (BERT, RetNet);
- "gelu_tanh": the same with GELU's tanh approximation (GPT-2's and GPT-3's "gelu_new");
- "relu": down(relu(up(x))) (Transformer-base, Transformer-XL, T5).

``d_ff`` is the hidden width as published (LLaMA-2-7B: 11008), not a multiplier.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
FFN_KINDS = ("swiglu", *ACTIVATIONS)


class DenseFFN(nn.Module):
    def __init__(self, d_model: int, d_ff: int, kind: str = "swiglu", bias: bool = False):
        super().__init__()
        if kind not in FFN_KINDS:
            raise ValueError(f"unknown ffn activation {kind!r}; expected one of {FFN_KINDS}")
        self.kind = kind
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if kind == "swiglu" else None
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.down(ACTIVATIONS[self.kind](self.up(x)))
