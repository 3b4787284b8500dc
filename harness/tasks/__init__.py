"""Synthetic recall tasks: data generators for the ``mqar``, ``selective_copy`` and ``passkey`` benchmarks.

Every task produces a ``TaskData``: ``inputs`` (N, T) int64 tokens and ``targets`` (N, T) int64, where
``targets[i, t]`` is the token the model must predict after reading ``inputs[i, :t+1]`` and ``IGNORE_INDEX`` (-100)
marks positions without loss or accuracy. Loss and accuracy are computed only where a target is set
(``labeled_logits``), so the output head runs at those positions only.

- ``mqar``: multi-query associative recall as defined by Zoology (Arora et al. 2023, arXiv:2312.04927).
- ``selective_copy``: the selective copying task of the Mamba paper (Gu & Dao 2023, arXiv:2312.00752).
- ``passkey``: a passkey hidden in filler text (Mohtashami & Jaggi 2023, arXiv:2305.16300), byte-level.

Train and test sets are generated with different seeds, and ``split`` removes from the test set every example
whose inputs are identical to a training example's (``assert_disjoint`` checks it).
"""
from .common import (TaskData, assert_disjoint, epoch_batches, evaluate_accuracy, labeled_logits, labeled_loss,
                     split)
from .mqar import MQARData, mqar
from .passkey import PasskeyData, passkey
from .selective_copy import SelectiveCopyData, selective_copy

__all__ = ["TaskData", "assert_disjoint", "epoch_batches", "evaluate_accuracy", "labeled_logits", "labeled_loss",
           "split", "MQARData", "mqar", "PasskeyData", "passkey", "SelectiveCopyData", "selective_copy"]
