"""Multi-query associative recall (MQAR), as defined by Zoology (Arora, Eyuboglu et al. 2023, arXiv:2312.04927).

An example of length T with P key-value pairs over a vocabulary of V tokens:

    position:  0   1   2   3  ...  2P-2 2P-1 | 2P ...                                      T-1
    inputs:    k1  v1  k2  v2 ...  kP   vP   | filler ... k3 filler ... k1 filler ... kP ...
    targets:   -   -   -   -  ...  -    -    | -      ... v3 -      ... v1 -      ... vP ...

- keys come from the first half of the vocabulary, [1, V/2), values from the second half, [V/2, V): disjoint;
  the P keys of an example are distinct (and so are its values);
- every key is queried once after the context, at an even offset from its end: query slot s in [0, (T - 2P)/2)
  sits at position 2P + 2s, and the slots are drawn without replacement with P(s) proportional to
  a * (s + 1)^(a - 1) (a = ``power_a``, 0.01 in Zoology): a power law that favours short gaps, as repeated bigrams
  in real text do;
- the target at a query position is the key's value; every other position has no target (IGNORE_INDEX), so loss
  and accuracy count the queries only;
- the remaining positions hold filler: uniformly random tokens of the whole vocabulary
  (``random_non_queries=True``, the generator's default in Zoology) or token 0 (``False``, the setting of Zoology's
  Figure 2 configurations).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..training import IGNORE_INDEX
from .common import TaskData

CHUNK = 1024  # examples generated at a time (bounds the (chunk, V/2) random matrix used to draw distinct keys)


@dataclass
class MQARData(TaskData):
    keys: torch.Tensor  # (N, P) the keys, in context order
    values: torch.Tensor  # (N, P) values[i, j] is paired with keys[i, j]
    query_positions: torch.Tensor  # (N, P) the position at which keys[i, j] is queried
    vocab_size: int = 0
    n_pairs: int = 0


def check_mqar_shape(seq_len: int, n_pairs: int, vocab_size: int) -> None:
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    if seq_len % 2:
        raise ValueError(f"MQAR needs an even seq_len, got {seq_len}")
    if 4 * n_pairs > seq_len:
        raise ValueError(f"seq_len={seq_len} is too short for {n_pairs} pairs: the context takes 2P positions and "
                         f"the P queries need P of the (T - 2P)/2 query slots (need seq_len >= 4P = {4 * n_pairs})")
    if vocab_size % 2 or vocab_size // 2 - 1 < n_pairs:
        raise ValueError(f"vocab_size={vocab_size} must be even with at least n_pairs={n_pairs} keys in [1, V/2)")


def gap_distribution(n_slots: int, power_a: float) -> torch.Tensor:
    """P(slot s) for s = 0..n_slots-1, proportional to a * (s + 1)^(a - 1)."""
    s = torch.arange(1, n_slots + 1, dtype=torch.float64)
    p = power_a * s ** (power_a - 1)
    return p / p.sum()


def _distinct(n: int, k: int, low: int, high: int, g: torch.Generator) -> torch.Tensor:
    """(n, k) rows of k distinct integers drawn uniformly from [low, high), in random order."""
    return low + torch.rand(n, high - low, generator=g).topk(k, dim=1).indices  # (n, k)


def mqar(n_examples: int, seq_len: int, n_pairs: int, vocab_size: int = 8192, seed: int = 0, power_a: float = 0.01,
         random_non_queries: bool = True) -> MQARData:
    check_mqar_shape(seq_len, n_pairs, vocab_size)
    g = torch.Generator().manual_seed(seed)
    half = vocab_size // 2
    context = 2 * n_pairs
    n_slots = (seq_len - context) // 2
    p_gap = gap_distribution(n_slots, power_a).float()
    parts = []
    for start in range(0, n_examples, CHUNK):
        n = min(CHUNK, n_examples - start)
        keys = _distinct(n, n_pairs, 1, half, g)  # (n, P) in [1, V/2)
        values = _distinct(n, n_pairs, half, vocab_size, g)  # (n, P) in [V/2, V)
        slots = torch.multinomial(p_gap.expand(n, n_slots), n_pairs, replacement=False, generator=g)  # (n, P)
        query_pos = context + 2 * slots  # (n, P)
        if random_non_queries:
            inputs = torch.randint(0, vocab_size, (n, seq_len), generator=g)
        else:
            inputs = torch.zeros(n, seq_len, dtype=torch.long)
        inputs[:, 0:context:2] = keys
        inputs[:, 1:context:2] = values
        inputs.scatter_(1, query_pos, keys)
        targets = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
        targets.scatter_(1, query_pos, values)
        parts.append((inputs, targets, keys, values, query_pos))
    inputs, targets, keys, values, query_pos = (torch.cat(t) for t in zip(*parts))
    return MQARData(inputs, targets, keys, values, query_pos, vocab_size=vocab_size, n_pairs=n_pairs)
