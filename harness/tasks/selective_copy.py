"""Selective copying, the task of the Mamba paper (Gu & Dao 2023, arXiv:2312.00752, section 3.1 and appendix E.1;
its data follow the "variable" copying task of the S4 repository).

An example of length T = R + M over a vocabulary of A tokens: noise is token 0, the marker is A - 1, and the M
tokens to copy are drawn uniformly from [1, A - 2]:

    inputs:   R positions of noise (0) with the M data tokens at random positions, in order | M markers (A - 1)
    targets:  -                                                                              | d1 d2 ... dM

At the j-th marker the model must output the j-th data token: the positions of the data tokens vary from example
to example, so a model has to select them by content (a fixed-delay copy is not enough). Accuracy counts the M
output positions only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..training import IGNORE_INDEX
from .common import TaskData

NOISE = 0


@dataclass
class SelectiveCopyData(TaskData):
    tokens: torch.Tensor  # (N, M) the data tokens in order
    positions: torch.Tensor  # (N, M) their positions in the noise region, ascending
    vocab_size: int = 0
    n_tokens: int = 0


def selective_copy(n_examples: int, seq_len: int, n_tokens: int = 16, vocab_size: int = 16,
                   seed: int = 0) -> SelectiveCopyData:
    if vocab_size < 4:
        raise ValueError(f"vocab_size must be >= 4 (noise, marker and at least two data tokens), got {vocab_size}")
    region = seq_len - n_tokens
    if n_tokens < 1 or region < n_tokens:
        raise ValueError(f"seq_len={seq_len} cannot hold {n_tokens} tokens to copy, their region and {n_tokens} "
                         f"markers (need seq_len >= {2 * n_tokens})")
    marker = vocab_size - 1
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab_size - 1, (n_examples, n_tokens), generator=g)  # (N, M) in [1, A-2]
    positions = torch.rand(n_examples, region, generator=g).topk(n_tokens, dim=1).indices.sort(dim=1).values
    inputs = torch.full((n_examples, seq_len), NOISE, dtype=torch.long)
    inputs.scatter_(1, positions, tokens)
    inputs[:, region:] = marker
    targets = torch.full((n_examples, seq_len), IGNORE_INDEX, dtype=torch.long)
    targets[:, region:] = tokens
    return SelectiveCopyData(inputs, targets, tokens, positions, vocab_size=vocab_size, n_tokens=n_tokens)
