"""The report section of an ``op_speed`` entry: per op, each implementation's median forward time and how many
times slower it is than the reference implementation."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ..analysis import ok_metric
from ..report.markdown import heading, md

if TYPE_CHECKING:
    from ..config import BenchmarkEntry
    from ..report.run import RunData


def section(run: RunData, entry: BenchmarkEntry) -> list[str]:
    reference = run.params(entry).reference_impl or "fast"
    named = reference != "fast"
    lines = heading(entry) + [
        "Forward time of each implementation of a mixer's operator on the same inputs, in one process. "
        + (f"`x {reference}` = time / time of our `{reference}` form at the same length"
           if named else "`x ours` = time / time of our fast form (`chunk`, `blocked`: the op's `reference_impl`) "
                         "at the same length") + " (> 1: slower than ours).", ""]
    column = f"x {reference}" if named else "x ours"
    sub = run.rows(entry.label)
    times = ok_metric(sub, "time_s")
    if times.empty:
        return lines + ["_(no measurements)_", ""]
    for op, g in times.groupby("mixer", sort=True):
        recorded = g["reference_impl"].dropna() if "reference_impl" in g else pd.Series(dtype=object)
        ref_impl = reference if named else (recorded.iloc[0] if len(recorded) else "chunk")
        ref = g[g["impl"] == ref_impl].set_index("seq_len")["value"]
        rows = []
        for (impl, n), r in g.groupby(["impl", "seq_len"], sort=True):
            value = float(r["value"].iloc[0])
            rows.append({"impl": impl, "source": r["source"].iloc[0] if "source" in r else "", "seq_len": int(n),
                         "time_ms": value * 1e3, "iqr_ms": float(r["iqr_s"].iloc[0]) * 1e3 if "iqr_s" in r else None,
                         column: value / ref[n] if n in ref.index else None})
        table = pd.DataFrame(rows).sort_values(["seq_len", "time_ms"])
        lines += [f"### `{op}`", "", md(table, floatfmt=".4g"), ""]
    failed = sub[sub["status"] != "ok"]
    if not failed.empty:
        lines += ["Implementations that did not run:", "",
                  md(failed[["mixer", "impl", "seq_len", "status", "error"]]), ""]
    return lines
