"""Layer patterns: which mixer and which FFN each layer gets, as data, so that hybrids are configs.

A pattern is a tuple of names repeated cyclically over the layers, after an optional fixed prefix:
``expand(("kda", "kda", "kda", "mla"), 8) == ["kda", "kda", "kda", "mla"] * 2`` (Kimi Linear's 3:1),
``expand(("moe",), 61, first=("dense",) * 3)`` (DeepSeek-V3's first three dense layers),
``expand(("mamba",) * 4 + ("gqa",) + ("mamba",) * 3, 32)`` (Jamba's 7:1 with attention at offset 4).
"""
from __future__ import annotations

from typing import Sequence


def expand(pattern: Sequence[str], n_layers: int, first: Sequence[str] = ()) -> list[str]:
    """The per-layer names: ``first`` as given, then ``pattern`` cyclically up to ``n_layers``."""
    if not pattern:
        raise ValueError("a layer pattern needs at least one entry")
    if len(first) > n_layers:
        raise ValueError(f"{len(first)} fixed leading layers but only {n_layers} layers")
    rest = n_layers - len(first)
    return list(first) + [pattern[i % len(pattern)] for i in range(rest)]
