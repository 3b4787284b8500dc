"""Regression check on deterministic figures (FLOPs, peak tensor bytes, state bytes, parameter counts).

``compare(base, new, tolerance)`` matches rows by cell coordinates, hyperparameters and metric. A figure whose
relative change exceeds the tolerance, or a baseline figure that the new run lacks (the cell failed or vanished),
is a regression. Timings are never compared here: they belong to reports, not to gates.

A gate that cannot fail is worse than none: an empty, unparsable or schema-less baseline, a baseline without a
single deterministic figure, a tolerance that is not a finite number >= 0, or a new run that matches none of the
baseline's figures raise ``CompareError`` (the CLI's rc 2), never "OK".
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .results import DETERMINISTIC_METRICS, KEY_COLUMNS, append_rows, load_results, read_journal

REQUIRED = (*KEY_COLUMNS, "metric", "value", "status")


class CompareError(ValueError):
    """Inputs a regression check cannot be made from."""


def _results_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "results.jsonl" if path.is_dir() else path


def load_checked(path: str | Path, role: str) -> pd.DataFrame:
    """The rows of ``path``, or CompareError if there are none, if lines cannot be parsed, or columns are missing."""
    file = _results_file(path)
    if not file.exists():
        raise CompareError(f"{role} {path}: no results file at {file}")
    journal = read_journal(file)
    bad = journal.orphans + (1 if journal.torn.strip() else 0)
    if bad and role == "baseline":
        raise CompareError(f"{role} {file}: {bad} line(s) are not complete JSON result rows (a damaged or "
                           f"non-results file); regenerate it with `python -m harness baseline RUN {file}`")
    if not journal.rows:
        raise CompareError(f"{role} {file}: no result rows (empty or not a results file)")
    df = pd.DataFrame(journal.rows)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise CompareError(f"{role} {file}: rows lack the column(s) {missing} (expected rows written by "
                           f"`python -m harness run` or `baseline`)")
    return df


def _keyed(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=["key", "value", "status"])
    df = df[df["metric"].isin(DETERMINISTIC_METRICS) & (df["status"] == "ok")].copy()
    if df.empty:
        return pd.DataFrame(columns=["key", "value", "status"])
    values = pd.to_numeric(df["value"], errors="coerce")
    if values.isna().any():
        bad = df.loc[values.isna(), "value"].iloc[0]
        raise CompareError(f"a deterministic figure is not a number: {bad!r} ({values.isna().sum()} row(s))")
    df["value"] = values
    hp = df["hparams"].map(lambda h: json.dumps(h, sort_keys=True)) if "hparams" in df else ""
    df["key"] = df[list(KEY_COLUMNS)].astype(str).agg("/".join, axis=1) + "/" + hp + "/" + df["metric"]
    return df


def compare(base: str | Path, new: str | Path, tolerance: float = 0.0) -> tuple[pd.DataFrame, bool]:
    """Returns (table of figures that moved or went missing, regressed?). Raises CompareError on inputs that
    cannot be compared (see the module's docstring)."""
    if not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) or tolerance < 0:
        raise CompareError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    b, n = _keyed(load_checked(base, "baseline")), _keyed(load_checked(new, "new run"))
    if b.empty:
        raise CompareError(f"baseline {base}: no successful deterministic figure ({', '.join(DETERMINISTIC_METRICS)}) "
                           f"to compare")
    if not set(b["key"]) & set(n.get("key", pd.Series(dtype=str))):
        raise CompareError(f"the new run {new} has none of the baseline's {len(b)} figures (another suite, device "
                           f"or sweep?)")
    merged = b.merge(n[["key", "value"]], on="key", how="left", suffixes=("_base", "_new"))
    rows = []
    for _, r in merged.iterrows():
        base_v, new_v = r["value_base"], r["value_new"]
        if pd.isna(new_v):
            rows.append({**{c: r[c] for c in ("mixer", "mode", "seq_len", "metric")}, "base": base_v, "new": None,
                         "change": None, "status": "missing in new run"})
            continue
        change = (new_v - base_v) / abs(base_v) if base_v else (0.0 if new_v == base_v else float("inf"))
        if abs(change) > tolerance:
            rows.append({**{c: r[c] for c in ("mixer", "mode", "seq_len", "metric")}, "base": base_v, "new": new_v,
                         "change": change, "status": "increased" if change > 0 else "decreased"})
    table = pd.DataFrame(rows)
    return table, not table.empty


def write_baseline(run: str | Path, dest: str | Path) -> int:
    """Keep only the deterministic, successful rows of a run (the figures CI gates on)."""
    df = load_results(run)
    keep = df[df["metric"].isin(DETERMINISTIC_METRICS) & (df["status"] == "ok")]
    cols = [c for c in ("suite", "benchmark", "kind", "mixer", "mixer_name", "impl", "hparams", "mode", "seq_len",
                        "batch", "d_model", "n_heads", "dtype", "seed", "device", "metric", "value", "unit",
                        "status") if c in keep]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("")
    records = keep[cols].to_dict(orient="records")
    for r in records:  # byte and FLOP counts are integers; pandas made them floats
        if isinstance(r["value"], float) and r["value"].is_integer():
            r["value"] = int(r["value"])
    append_rows(dest, records)
    return len(keep)
