"""Absolute position options of the model stacks, added to the token embeddings:

- "learned": a trained table of max_seq_len vectors (GPT-2, GPT-3, BERT);
- "sinusoidal": Vaswani et al.'s fixed sinusoids (Transformer-base);
- "none": the mixers place tokens themselves: RoPE inside the attention mixers (LLaMA, Mistral, DeepSeek's MLA),
  relative positions inside ``transformer_xl``, decays and convolutions in recurrent mixers (Mamba, RWKV, RetNet,
  KDA), or nothing at all (Jamba's attention layers have no positional encoding: its Mamba layers carry order).
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbone import sinusoidal_positions

POSITIONS = ("none", "learned", "sinusoidal")


class AbsolutePositions(nn.Module):
    """positions(start, T) -> (T, D) vectors for absolute positions start..start+T-1."""

    def __init__(self, kind: str, d_model: int, max_seq_len: int):
        super().__init__()
        if kind not in ("learned", "sinusoidal"):
            raise ValueError(f"unknown absolute positions {kind!r}; expected 'learned' or 'sinusoidal'")
        self.kind, self.d_model, self.max_seq_len = kind, d_model, max_seq_len
        self.table = nn.Embedding(max_seq_len, d_model) if kind == "learned" else None

    def forward(self, start: int, T: int, device: torch.device) -> torch.Tensor:
        if start + T > self.max_seq_len and self.kind == "learned":
            raise ValueError(f"position {start + T - 1} is past the learned table's {self.max_seq_len} positions")
        pos = torch.arange(start, start + T, device=device)
        return self.table(pos) if self.table is not None else sinusoidal_positions(pos, self.d_model)


def make_positions(kind: str, d_model: int, max_seq_len: int) -> AbsolutePositions | None:
    if kind == "none":
        return None
    if kind not in POSITIONS:
        raise ValueError(f"unknown positions {kind!r}; expected one of {POSITIONS}")
    return AbsolutePositions(kind, d_model, max_seq_len)
