"""Tidy results: one JSON object per line in ``OUT/results.jsonl``, one line per measurement (or per failed cell).

Every row carries the cell's coordinates (benchmark, mixer, impl, mode, seq_len, batch, d_model, n_heads, dtype,
seed, hparams), the device and thread count, the SDPA backend that ran, and ``metric``, ``value``, ``unit``,
``status`` (ok | error | oom | timeout | crashed | skipped | missing) and ``error``.

The file is a journal of committed cells. A run first writes a header line (``{"_journal": ...}``); each cell's
rows are then written in one write together with a commit marker (``{"_commit": cell_id, "rows": n}``) and
fsync'd. Only rows that a marker commits count: a cell cut off mid-write (kill, full disk) leaves rows without a
marker, a torn tail, which ``read_journal`` reports and ``set_aside_torn_tail`` moves into a side file before a
resumed run appends, so that the cell runs again. A ``{"_retract": cell_id, "reason": ...}`` marker withdraws a
committed cell (``run --resume OUT --rerun GLOB``, after a fix to what it measured): its rows stop counting, and a
later commit of the same cell replaces them. Lines before the first header (files written before the journal
existed, baselines written by ``append_rows``) are plain rows. ``read_rows`` / ``load_results`` are the one reader
that everything (report, compare, claims, tests) uses; they return rows only, never markers.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

STATUSES = ("ok", "error", "oom", "timeout", "crashed", "skipped", "missing")
DETERMINISTIC_METRICS = ("flops", "flops_executed", "peak_tensor_bytes", "state_bytes", "state_bytes_analytic",
                         "params")
KEY_COLUMNS = ("benchmark", "mixer", "impl", "mode", "seq_len", "batch", "d_model", "n_heads", "dtype", "seed")
HEADER = {"_journal": "transformer-bench results", "version": 1}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _line(row: dict[str, Any]) -> str:
    return json.dumps({k: _clean(v) for k, v in row.items()}, default=str) + "\n"


def _write_all(path: Path, text: str) -> None:
    """Append ``text`` and fsync; on failure (disk full, file size limit) cut the file back to where it was, so
    that a failed write leaves no fragment, and re-raise."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        try:
            os.ftruncate(fd, start)
        except OSError:
            pass  # read_journal still sees the fragment as a torn tail
        raise
    finally:
        os.close(fd)


def append_rows(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Plain rows, no journal (baseline files, hand-made fixtures)."""
    _write_all(Path(path), "".join(_line(row) for row in rows))


def start_journal(path: Path) -> None:
    """Mark the start of a run's (or a resumed run's) committed cells."""
    _write_all(Path(path), _line(HEADER))


def commit_cell(path: Path, cell_id: str, rows: list[dict[str, Any]]) -> None:
    """A cell's rows and their commit marker, in one write, fsync'd."""
    _write_all(Path(path), "".join(_line(r) for r in rows) + _line({"_commit": cell_id, "rows": len(rows)}))


def retract_cells(path: Path, cell_ids: Iterable[str], reason: str) -> None:
    """Withdraw committed cells so that a resumed run measures them again (``run --rerun``): one ``_retract`` marker
    per cell, in one write, fsync'd. The file stays append-only: the withdrawn rows remain in it, with the marker
    and its reason after them, and no reader counts them."""
    _write_all(Path(path), "".join(_line({"_retract": c, "reason": reason}) for c in cell_ids))


@dataclass
class Journal:
    rows: list[dict[str, Any]] = field(default_factory=list)  # committed rows (and plain rows before any header)
    cells: set[str] = field(default_factory=set)  # ids of the committed cells
    good_bytes: int = 0  # length of the file up to the end of its last complete unit
    torn: bytes = b""  # what follows: an uncommitted cell, a cut line
    orphans: int = 0  # lines inside the file that no marker commits (damage in the middle; ignored)
    retracted: dict[str, str] = field(default_factory=dict)  # cell id -> reason, for cells withdrawn and not redone


def read_journal(path: Path) -> Journal:
    j = Journal()
    path = Path(path)
    if not path.exists():
        return j
    data = path.read_bytes()
    journal_mode, pending, pos = False, [], 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break  # an unterminated last line: torn
        raw, pos = data[pos:end], end + 1
        if not raw.strip():
            if not pending:
                j.good_bytes = pos
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict):
            j.orphans += 1
            continue
        if "_journal" in obj:
            j.orphans += len(pending)
            journal_mode, pending, j.good_bytes = True, [], pos
        elif "_retract" in obj:
            j.orphans += len(pending)
            pending, j.good_bytes = [], pos
            _retract(j, obj["_retract"], str(obj.get("reason", "")))
        elif "_commit" in obj:
            n = obj.get("rows")
            take = pending[-n:] if isinstance(n, int) and 0 < n <= len(pending) else None
            if take and all(r.get("cell_id") == obj["_commit"] for r in take):
                j.rows.extend(take)
                j.cells.add(obj["_commit"])
                j.retracted.pop(obj["_commit"], None)
                j.orphans += len(pending) - len(take)
            else:
                j.orphans += len(pending) + 1
            pending, j.good_bytes = [], pos
        elif journal_mode:
            pending.append(obj)
        else:
            j.rows.append(obj)
            if "cell_id" in obj:
                j.cells.add(obj["cell_id"])
            j.good_bytes = pos
    j.torn = data[j.good_bytes:]
    return j


def _retract(j: Journal, cell_id: str, reason: str) -> None:
    if cell_id in j.cells:
        j.cells.discard(cell_id)
        j.rows = [r for r in j.rows if r.get("cell_id") != cell_id]
        j.retracted[cell_id] = reason


def set_aside_torn_tail(path: Path, journal: Journal) -> Path | None:
    """Move a torn tail into ``results.jsonl.torn-<time>`` and cut the journal back to its last complete unit."""
    if not journal.torn.strip():
        if journal.torn:
            os.truncate(path, journal.good_bytes)
        return None
    aside = Path(f"{path}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
    aside.write_bytes(journal.torn)
    os.truncate(path, journal.good_bytes)
    return aside


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All committed rows (a cell cut off mid-write is not among them)."""
    return read_journal(Path(path)).rows


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
