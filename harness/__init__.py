"""transformer-bench's engine: suites -> cells -> measurements -> results.jsonl -> analysis -> report."""
from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def load_results(out: str | Path):
    """A run's results as a tidy pandas DataFrame: one row per measurement (or per failed cell) of
    ``OUT/results.jsonl`` (or the file itself), with typed columns (``harness.results.typed``): the cell's
    coordinates (``benchmark``, ``mixer``, ``impl``, ``mode``, ``dtype`` ... as categories; ``seq_len``,
    ``batch``, ``d_model``, ``n_heads``, ``seed`` as nullable integers), ``metric``, ``value`` (float), ``unit``,
    ``status`` (ok, error, oom, timeout, skipped, missing), ``error``, ``hparams`` and each kind's extra columns."""
    from .results import load_results as read, typed

    return typed(read(out))
