"""What the recall tasks share: the data container, the train/test split without overlap, batching, and loss and
accuracy computed only at labelled positions."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..training import IGNORE_INDEX

D = TypeVar("D", bound="TaskData")


@dataclass
class TaskData:
    inputs: torch.Tensor  # (N, T) int64 tokens
    targets: torch.Tensor  # (N, T) int64: the token to predict after inputs[:, :t+1]; IGNORE_INDEX = no loss

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def seq_len(self) -> int:
        return self.inputs.shape[1]

    def subset(self: D, index: torch.Tensor | slice) -> D:
        """The examples at ``index``: every tensor field is indexed along its first (example) dimension."""
        changes = {f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), torch.Tensor)}
        return dataclasses.replace(self, **changes)

    def labeled_mask(self) -> torch.Tensor:
        return self.targets != IGNORE_INDEX


# ---- train / test without overlap ------------------------------------------------------------------------------------

def _row_hashes(inputs: torch.Tensor) -> np.ndarray:
    """A 64-bit hash per row (random position weights, arithmetic mod 2^64); equal rows have equal hashes."""
    T = inputs.shape[1]
    weights = np.random.default_rng(12345).integers(1, 2**63, size=T, dtype=np.uint64) | np.uint64(1)
    out = np.empty(inputs.shape[0], dtype=np.uint64)
    for start in range(0, inputs.shape[0], 8192):  # chunks: (8192, T) uint64 at a time
        rows = inputs[start:start + 8192].numpy().astype(np.uint64)
        with np.errstate(over="ignore"):
            out[start:start + 8192] = (rows * weights).sum(axis=1)
    return out


def overlapping(train: TaskData, test: TaskData) -> torch.Tensor:
    """Bool mask over the test examples whose inputs equal some training example's inputs."""
    if train.seq_len != test.seq_len:
        return torch.zeros(len(test), dtype=torch.bool)
    h_train, h_test = _row_hashes(train.inputs), _row_hashes(test.inputs)
    candidates = np.nonzero(np.isin(h_test, h_train))[0]
    mask = torch.zeros(len(test), dtype=torch.bool)
    if len(candidates):
        by_hash: dict[int, list[int]] = {}
        for i, h in enumerate(h_train):
            by_hash.setdefault(int(h), []).append(i)
        for j in candidates:  # a hash match is confirmed by comparing the rows themselves
            mask[j] = any(torch.equal(train.inputs[i], test.inputs[j]) for i in by_hash[int(h_test[j])])
    return mask


def assert_disjoint(train: TaskData, test: TaskData) -> None:
    n = int(overlapping(train, test).sum())
    if n:
        raise AssertionError(f"{n} test example(s) are identical to training examples")


def split(make: Callable[[int, int], D], n_train: int, n_test: int, train_seed: int, test_seed: int) -> tuple[D, D]:
    """``make(n, seed)`` generates n examples. The test set comes from another seed, with every example identical to
    a training example removed (and replaced by further test examples), so the two sets are disjoint."""
    if train_seed == test_seed:
        raise ValueError("train and test sets need different seeds")
    train = make(n_train, train_seed)
    extra = max(16, n_test // 10)
    test = make(n_test + extra, test_seed)
    test = test.subset(~overlapping(train, test))
    if len(test) < n_test:
        raise ValueError(f"only {len(test)} of {n_test} test examples differ from the training set: the task is too "
                         "small for this many examples (raise the vocabulary or the length)")
    test = test.subset(slice(0, n_test))
    assert_disjoint(train, test)
    return train, test


def epoch_batches(data: TaskData, batch_size: int, seed: int,
                  device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (inputs, targets) batches: each epoch a fresh seeded permutation, the last partial batch dropped."""
    if batch_size > len(data):
        raise ValueError(f"batch size {batch_size} exceeds the {len(data)} training examples")
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(data), generator=g)
        for start in range(0, len(data) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            yield data.inputs[idx].to(device), data.targets[idx].to(device)


# ---- loss and accuracy at labelled positions only --------------------------------------------------------------------

def hidden_states(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The backbone's final normalised hidden states (B, T, D): ``DecoderLM.forward`` without its tied head
    (tests/test_recall.py checks that the two agree)."""
    return model.hidden(tokens)  # (B, T, D), absolute positions included where the mixer needs them


def labeled_logits(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (K, V) at the K labelled positions of the batch and their labels (K,). The tied head runs only there:
    with an 8k vocabulary and a few queries per sequence, this is most of a full head's cost saved."""
    mask = targets != IGNORE_INDEX  # (B, T)
    h = hidden_states(model, inputs)[mask]  # (K, D)
    return F.linear(h, model.embed.weight), targets[mask]


def labeled_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) over the labelled positions; the ``loss_fn`` of ``harness.training.train``."""
    logits, labels = labeled_logits(model, inputs, targets)
    return F.cross_entropy(logits.float(), labels)


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: TaskData, batch_size: int | None = None,
                      device: torch.device | str = "cpu", max_tokens: int = 16384) -> dict[str, float]:
    """accuracy: fraction of labelled positions whose argmax is the label; example_accuracy: fraction of examples
    with every labelled position right; loss: mean cross-entropy over labelled positions. Batches hold at most
    ``max_tokens`` tokens unless ``batch_size`` is given (long evaluation sequences, quadratic attention)."""
    if batch_size is None:
        batch_size = max(1, min(256, max_tokens // data.seq_len))
    was_training = model.training
    model.eval()
    correct = total = examples_right = 0
    loss_sum = 0.0
    for start in range(0, len(data), batch_size):
        inputs = data.inputs[start:start + batch_size].to(device)
        targets = data.targets[start:start + batch_size].to(device)
        logits, labels = labeled_logits(model, inputs, targets)
        hit = logits.argmax(-1) == labels  # (K,)
        correct += int(hit.sum())
        total += hit.numel()
        loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        per_position = torch.ones_like(targets, dtype=torch.bool)  # (B, T): True where not labelled or right
        per_position[targets != IGNORE_INDEX] = hit
        examples_right += int(per_position.all(dim=1).sum())
    model.train(was_training)
    if total == 0:
        raise ValueError("the evaluation set has no labelled positions")
    return {"accuracy": correct / total, "example_accuracy": examples_right / len(data), "loss": loss_sum / total}
