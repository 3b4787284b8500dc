"""Markdown pieces shared by the report sections: tables, an entry's description, metric units, pivots."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from ..config import BenchmarkEntry

UNITS = {  # metric -> (scale, label)
    "time_s": (1e3, "ms"),
    "peak_tensor_bytes": (1 / 2**20, "MiB"),
    "cuda_peak_bytes": (1 / 2**20, "MiB"),
    "state_bytes": (1 / 2**10, "KiB"),
    "flops": (1e-9, "GFLOP"),
    "tokens_per_s": (1e-3, "k tok/s"),
    "peak_fraction": (100, "% of matmul peak"),
}


def md(df: pd.DataFrame, floatfmt: str = ".3g") -> str:
    """A DataFrame as a markdown table (``_(none)_`` when empty)."""
    if df.empty:
        return "_(none)_\n"
    return df.to_markdown(index=False, floatfmt=floatfmt) + "\n"


def heading(entry: BenchmarkEntry) -> list[str]:
    """An entry's section heading and its `description` (as written in the suite) under it."""
    lines = [f"## Benchmark `{entry.label}` ({entry.kind})", ""]
    return lines + ([entry.description.strip(), ""] if entry.description else [])


def pivot(rows: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """mixers x seq_len table of one metric of one entry's rows; failed cells show their status."""
    scale, _ = UNITS.get(metric, (1, ""))
    sub = rows[rows["mode"] == mode] if not rows.empty else rows
    if sub.empty:
        return pd.DataFrame()
    ok = sub[(sub["status"] == "ok") & (sub["metric"] == metric)]
    failed = sub[sub["status"] != "ok"]
    if ok.empty:
        return pd.DataFrame()
    cells: dict[tuple, str] = {}
    for _, r in ok.iterrows():
        cells[(r["mixer"], int(r["seq_len"]))] = f"{r['value'] * scale:.4g}"
    for _, r in failed.iterrows():
        cells.setdefault((r["mixer"], int(r["seq_len"])), r["status"])
    mixers = sorted({m for m, _ in cells})
    lengths = sorted({n for _, n in cells})
    table = pd.DataFrame([[cells.get((m, n), "") for n in lengths] for m in mixers],
                         columns=[f"n={n}" for n in lengths])
    table.insert(0, "mixer", mixers)
    return table
