"""Regression check on deterministic figures (FLOPs, peak tensor bytes, state bytes, parameter counts).

``compare(base, new, tolerance)`` matches rows by cell coordinates, hyperparameters and metric. A figure whose
relative change exceeds the tolerance, or a baseline figure that the new run lacks (the cell failed or vanished),
is a regression. Timings are never compared here: they belong to reports, not to gates.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .results import DETERMINISTIC_METRICS, KEY_COLUMNS, append_rows, load_results


def _keyed(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=["key", "value", "status"])
    df = df[df["metric"].isin(DETERMINISTIC_METRICS) & (df["status"] == "ok")].copy()
    hp = df["hparams"].map(lambda h: json.dumps(h, sort_keys=True)) if "hparams" in df else ""
    df["key"] = df[list(KEY_COLUMNS)].astype(str).agg("/".join, axis=1) + "/" + hp + "/" + df["metric"]
    return df


def compare(base: str | Path, new: str | Path, tolerance: float = 0.0) -> tuple[pd.DataFrame, bool]:
    """Returns (table of figures that moved or went missing, regressed?)."""
    b, n = _keyed(load_results(base)), _keyed(load_results(new))
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
