"""The report section of the recall benchmarks (``mqar``, ``selective_copy``, ``passkey``): the best-lr accuracy
per configuration, every learning rate, and the kind's plots (``RecallBenchmark.report_plots``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from ..analysis import ok_metric
from ..report.markdown import heading, md
from ..report.plots import accuracy_plot

if TYPE_CHECKING:
    from ..config import BenchmarkEntry
    from ..report.run import RunData


@dataclass
class AccuracyPlot:
    data: pd.DataFrame  # best-lr accuracy rows (column `value`) with the x and facet columns
    x: str
    facet: list[str]  # one panel per value of these columns
    tag: str  # the file is plots/<label>-<tag>.png
    title: str
    logx: bool = True
    vline: str | None = None  # a column whose value is marked by a dotted line (passkey: the training length)


def best_accuracy(rows: pd.DataFrame) -> pd.DataFrame:
    """Best-lr ``accuracy`` rows of a recall entry (one per cell, and per eval_len for passkey)."""
    acc = ok_metric(rows, "accuracy")
    return acc[acc["best"] == True] if "best" in acc else acc  # noqa: E712


def accuracy_table(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """mixers x configurations (keys) of the best accuracy; failed cells show their status."""
    best = best_accuracy(rows)
    failed = rows[rows["status"] != "ok"]
    label = lambda r: " ".join(f"{k}={int(r[k])}" for k in keys if k in r and pd.notna(r[k]))  # noqa: E731
    cells: dict[tuple, str] = {}
    for _, r in best.iterrows():
        cells[(r["mixer"], label(r))] = f"{r['value']:.3f}"
    for _, r in failed.iterrows():
        cells.setdefault((r["mixer"], label(r)), r["status"])
    if not cells:
        return pd.DataFrame()
    mixers = list(dict.fromkeys(m for m, _ in cells))
    configs = sorted({c for _, c in cells}, key=lambda c: [int(x.split("=")[1]) for x in c.split()])
    table = pd.DataFrame([[cells.get((m, c), "") for c in configs] for m in mixers], columns=configs)
    table.insert(0, "mixer", mixers)
    return table


def every_lr(rows: pd.DataFrame, keys: list[str]) -> list[str]:
    acc = ok_metric(rows, "accuracy")
    if acc.empty:
        return []
    cols = [c for c in ["mixer", *keys, "lr", "value", "best"] if c in acc]
    steps = ok_metric(rows, "train_steps")[["cell_id", "lr", "value"]].rename(columns={"value": "steps"}) \
        if "lr" in rows else pd.DataFrame()
    every = acc.merge(steps, on=["cell_id", "lr"], how="left") if not steps.empty else acc
    every = every[cols + (["steps"] if "steps" in every else [])].rename(columns={"value": "accuracy"})
    return ["<details><summary>every learning rate</summary>", "", md(every, floatfmt=".4g"), "</details>", ""]


def section(run: RunData, entry: BenchmarkEntry, keys: list[str], plots: list[AccuracyPlot], note: str = "") \
        -> list[str]:
    rows = run.rows(entry.label)
    lines = heading(entry) + [
        "Test accuracy of a 2-layer LM per mixer, the best of the learning-rate sweep (every lr is listed "
        "below and in results.jsonl with `lr` and `best`); training stops early at the suite's "
        "early-stop accuracy." + note, ""]
    if rows.empty:
        return lines + ["_(no accuracy measured)_", ""]
    table = accuracy_table(rows, keys)
    lines += [md(table), ""] if not table.empty else ["_(no accuracy measured)_", ""]
    lines += every_lr(rows, keys)
    for p in plots:
        path = run.plots / f"{entry.label}-{p.tag}.png"
        if accuracy_plot(p.data, p.x, [f for f in p.facet if f in p.data], path, p.title, p.logx, vline=p.vline):
            lines += [f"![{entry.label} {p.tag}](plots/{path.name})", ""]
    return lines
