"""Passkey retrieval (Mohtashami & Jaggi 2023, "Landmark Attention", arXiv:2305.16300), byte-level.

A random k-digit passkey is hidden at a random sentence boundary of repeated filler text, and the sequence ends by
asking for it; the model must produce the digits. Bytes are tokens (vocabulary 256, as the perplexity benchmark),
so no tokenizer is needed:

    <filler ...> The pass key is 71432. Remember it. 71432 is the pass key. <filler ...> What is the pass key?
    The pass key is 71432
                    ^^^^^ targets: the answer digits only (each predicted from the bytes before it)

Every example of a length has exactly that length; the filler is cut to fit. A model is trained at one length and
evaluated at longer ones (``passkey`` benchmark); accuracy counts the answer digits, ``example_accuracy`` whole keys.
With teacher forcing, all k digits right means greedy decoding reproduces the whole key.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..training import IGNORE_INDEX
from .common import TaskData

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is {key}"


@dataclass
class PasskeyData(TaskData):
    keys: torch.Tensor  # (N, k) the digits (0-9) of each passkey
    needle_positions: torch.Tensor  # (N,) byte offset at which the needle starts
    n_digits: int = 0


def min_length(n_digits: int) -> int:
    """The shortest sequence that holds the needle and the question (with no filler)."""
    key = "0" * n_digits
    return len(NEEDLE.format(key=key)) + len(QUESTION.format(key=key)) - 1


def passkey(n_examples: int, seq_len: int, n_digits: int = 5, seed: int = 0) -> PasskeyData:
    if n_digits < 1:
        raise ValueError(f"n_digits must be >= 1, got {n_digits}")
    if seq_len < min_length(n_digits):
        raise ValueError(f"seq_len={seq_len} cannot hold the needle and the question ({min_length(n_digits)} bytes "
                         f"for a {n_digits}-digit key)")
    rng = random.Random(seed)
    inputs = torch.empty(n_examples, seq_len, dtype=torch.long)
    targets = torch.full((n_examples, seq_len), IGNORE_INDEX, dtype=torch.long)
    keys = torch.empty(n_examples, n_digits, dtype=torch.long)
    needle_at = torch.empty(n_examples, dtype=torch.long)
    repeats = seq_len // len(FILLER) + 2
    for i in range(n_examples):
        key = "".join(rng.choice("0123456789") for _ in range(n_digits))
        needle, question = NEEDLE.format(key=key), QUESTION.format(key=key)
        filler_len = seq_len + 1 - len(needle) - len(question)  # the text is seq_len + 1 bytes: inputs and targets
        filler = (FILLER * repeats)[:filler_len]
        boundaries = [0] + [j + 2 for j in range(filler_len - 1) if filler[j:j + 2] == ". "]
        at = rng.choice([b for b in boundaries if b <= filler_len])
        text = filler[:at] + needle + filler[at:] + question
        data = torch.tensor(list(text.encode("ascii")), dtype=torch.long)  # (seq_len + 1,)
        inputs[i] = data[:-1]
        targets[i, -n_digits:] = data[-n_digits:]  # the answer: the last n_digits bytes of the text
        keys[i] = torch.tensor([int(c) for c in key])
        needle_at[i] = at
    return PasskeyData(inputs, targets, keys, needle_at, n_digits=n_digits)
