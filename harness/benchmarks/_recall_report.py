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
    """Best-lr ``accuracy`` rows of a recall entry (one per cell, and per eval_len for passkey); where the best lr
    ran several training seeds, one row with their mean (``value``), ``value_min``, ``value_max`` and ``seeds``."""
    acc = ok_metric(rows, "accuracy")
    acc = acc[acc["best"] == True] if "best" in acc else acc  # noqa: E712
    if acc.empty or "train_seed" not in acc or acc["train_seed"].nunique(dropna=True) <= 1:
        return acc
    keys = ["cell_id"] + (["eval_len"] if "eval_len" in acc else [])
    grouped = acc.groupby(keys, dropna=False)["value"]
    stats = pd.DataFrame({"value": grouped.mean(), "value_min": grouped.min(), "value_max": grouped.max(),
                          "seeds": grouped.count()}).reset_index()
    first = acc.drop_duplicates(subset=keys, keep="first").drop(columns=["value"])
    return first.merge(stats, on=keys)


WINDOW_HPARAMS = {"window": "window", "segment_len": "segment", "mem_len": "memory"}


def windows(rows: pd.DataFrame) -> pd.DataFrame:
    """How far back each windowed mixer sees in each configuration, against the sequence length: from the
    hparams every row records (a window as long as the sequence would be full attention)."""
    if rows.empty or "hparams" not in rows:
        return pd.DataFrame()
    out = []
    for (mixer, n), g in rows.drop_duplicates(subset=["mixer", "seq_len"]).groupby(["mixer", "seq_len"]):
        h = g["hparams"].iloc[0] if isinstance(g["hparams"].iloc[0], dict) else {}
        found = {label: h[k] for k, label in WINDOW_HPARAMS.items() if k in h}
        if not found:
            continue
        span = found.get("window", found.get("segment", 0) + found.get("memory", 0))
        out.append({"mixer": mixer, "seq_len": int(n), **{k: int(v) for k, v in found.items()},
                    "sees at most": int(span), "window / length": f"{span / n:.3g}"})
    return pd.DataFrame(out)


def budget(rows: pd.DataFrame) -> str:
    """The training budget of a recall entry, from its rows: steps per lr, examples, lrs and seeds."""
    parts = []
    if "steps_budget" in rows and rows["steps_budget"].notna().any():
        parts.append(f"at most {int(rows['steps_budget'].max())} steps per training (early stop aside)")
    if "train_examples" in rows and rows["train_examples"].notna().any():
        parts.append(f"{int(rows['train_examples'].max())} training examples")
    if "lr" in rows and rows["lr"].notna().any():
        parts.append("lrs " + ", ".join(f"{x:g}" for x in sorted(rows["lr"].dropna().unique())))
    if "train_seed" in rows and rows["train_seed"].notna().any():
        parts.append(f"{rows['train_seed'].nunique()} training seed(s) at the best lr")
    return "; ".join(parts)


def accuracy_table(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """mixers x configurations (keys) of the best accuracy; failed cells show their status."""
    best = best_accuracy(rows)
    failed = rows[rows["status"] != "ok"]
    label = lambda r: " ".join(f"{k}={int(r[k])}" for k in keys if k in r and pd.notna(r[k]))  # noqa: E731
    cells: dict[tuple, str] = {}
    for _, r in best.iterrows():
        spread = f" ({r['value_min']:.3f}-{r['value_max']:.3f})" if r.get("seeds", 1) > 1 else ""
        cells[(r["mixer"], label(r))] = f"{r['value']:.3f}{spread}"
    for _, r in failed.iterrows():
        cells.setdefault((r["mixer"], label(r)), r["status"])
    if not cells:
        return pd.DataFrame()
    mixers = sorted({m for m, _ in cells})  # alphabetical: cells of a resumed run arrive in no useful order
    configs = sorted({c for _, c in cells}, key=lambda c: [int(x.split("=")[1]) for x in c.split()])
    table = pd.DataFrame([[cells.get((m, c), "") for c in configs] for m in mixers], columns=configs)
    table.insert(0, "mixer", mixers)
    return table


def every_lr(rows: pd.DataFrame, keys: list[str]) -> list[str]:
    acc = ok_metric(rows, "accuracy")
    if acc.empty:
        return []
    seed = ["train_seed"] if "train_seed" in acc else []
    cols = [c for c in ["mixer", *keys, "lr", *seed, "value", "best"] if c in acc]
    on = ["cell_id", "lr", *seed]
    steps = ok_metric(rows, "train_steps")[on + ["value"]].rename(columns={"value": "steps"}) \
        if "lr" in rows else pd.DataFrame()
    if "eval_len" in acc:  # passkey: the steps once per training, beside each evaluation length
        steps = steps.drop_duplicates(subset=on)
    every = acc.merge(steps, on=on, how="left") if not steps.empty else acc
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
    spent = budget(rows)
    if spent:
        lines += [f"Budget: {spent}.", ""]
    win = windows(rows)
    if not win.empty:
        lines += ["Windowed mixers: how far back they see against the sequence length (from the hparams of the "
                  "rows; a window of the whole sequence would be full attention).", "", md(win), ""]
    lines += every_lr(rows, keys)
    for p in plots:
        path = run.plots / f"{entry.label}-{p.tag}.png"
        if accuracy_plot(p.data, p.x, [f for f in p.facet if f in p.data], path, p.title, p.logx, vline=p.vline,
                         specs=run.specs):
            lines += [f"![{entry.label} {p.tag}](plots/{path.name})", ""]
    return lines
