"""Tidy results: one JSON object per line in ``OUT/results.jsonl``, one line per measurement (or per failed cell).

Every row carries the cell's coordinates (benchmark, mixer, impl, mode, seq_len, batch, d_model, n_heads, dtype,
seed, hparams), the device and thread count, the SDPA backend that ran, and ``metric``, ``value``, ``unit``,
``status`` (ok | error | oom | timeout | skipped | missing) and ``error``. Rows of one cell are written together and
flushed to disk before the next cell starts, so an interrupted run loses at most the cell that was running.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

STATUSES = ("ok", "error", "oom", "timeout", "skipped", "missing")
DETERMINISTIC_METRICS = ("flops", "peak_tensor_bytes", "state_bytes", "state_bytes_analytic", "params")
KEY_COLUMNS = ("benchmark", "mixer", "impl", "mode", "seq_len", "batch", "d_model", "n_heads", "dtype", "seed")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def append_rows(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    text = "".join(json.dumps({k: _clean(v) for k, v in row.items()}, default=str) + "\n" for row in rows)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All complete rows; a torn last line (a run killed mid-write) is ignored."""
    rows = []
    if not path.exists():
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def load_results(path: str | Path) -> pd.DataFrame:
    """results.jsonl (or a run directory holding one) as a DataFrame."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}")
    return pd.DataFrame(read_rows(path))


# Column types of the tidy table (``harness.load_results``); columns a kind adds keep pandas' inferred type.
INT_COLUMNS = ("seq_len", "batch", "d_model", "n_heads", "seed", "threads", "n_pairs", "eval_len")
FLOAT_COLUMNS = ("value", "lr", "q1_s", "q3_s", "iqr_s")
CATEGORY_COLUMNS = ("suite", "benchmark", "kind", "mixer", "mixer_name", "impl", "mode", "dtype", "device", "metric",
                    "unit", "status")


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with typed columns: nullable integers for the cell's sizes, floats for values, categories for
    names and statuses (``status`` with every status as a category, ok first), booleans for ``best``, a UTC
    timestamp for ``time_utc``."""
    df = df.copy()
    for columns, dtype in ((INT_COLUMNS, "Int64"), (FLOAT_COLUMNS, "float64")):
        for c in columns:
            if c in df:
                try:  # a column holding something else than numbers keeps its values (never coerced to NaN)
                    df[c] = pd.to_numeric(df[c], errors="raise").astype(dtype)
                except (ValueError, TypeError):
                    pass
    for c in CATEGORY_COLUMNS:
        if c in df:
            df[c] = df[c].astype("category")
    if "status" in df:
        df["status"] = df["status"].cat.set_categories(STATUSES)
    if "best" in df:
        df["best"] = df["best"].astype("boolean")
    if "time_utc" in df:
        df["time_utc"] = pd.to_datetime(df["time_utc"], utc=True, errors="coerce")
    return df
