"""The report's figures (matplotlib, headless): metric against length with the fitted power laws, training curves,
recall accuracy. Each function saves one PNG and returns whether it drew anything."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..analysis import ok_metric  # noqa: E402
from .markdown import UNITS  # noqa: E402


def scaling_plot(rows: pd.DataFrame, fits: pd.DataFrame, metric: str, modes: list[str], path: Path,
                 title: str) -> bool:
    """One panel per mode: the metric against n on log-log axes, and each fitted power law (dashed)."""
    data = ok_metric(rows, metric)
    data = data[data["mode"].isin(modes)]
    if data.empty:
        return False
    scale, unit = UNITS.get(metric, (1, ""))
    data = data.assign(y=data["value"].astype(float) * scale)
    present = [m for m in modes if m in set(data["mode"])]
    fig, axes = plt.subplots(1, len(present), figsize=(5.5 * len(present), 4.2), squeeze=False)
    palette = dict(zip(sorted(data["mixer"].unique()), sns.color_palette("tab10", data["mixer"].nunique())))
    for ax, mode in zip(axes[0], present):
        d = data[data["mode"] == mode]
        sns.lineplot(data=d, x="seq_len", y="y", hue="mixer", marker="o", ax=ax, palette=palette,
                     errorbar=None)
        if not fits.empty:
            f = fits[(fits["metric"] == metric) & (fits["mode"] == mode)]
            for _, r in f.iterrows():
                if r["exponent"] is None or pd.isna(r["exponent"]) or not r["n_range"]:
                    continue
                lo, hi = (int(v) for v in r["n_range"].split("-"))
                pts = d[(d["mixer"] == r["mixer"]) & (d["seq_len"] >= lo) & (d["seq_len"] <= hi)]
                if pts.empty:
                    continue
                # the fitted line through the geometric mean of the fitted points
                xs = np.array([lo, hi], dtype=float)
                x0, y0 = np.exp(np.log(pts["seq_len"]).mean()), np.exp(np.log(pts["y"]).mean())
                ax.plot(xs, y0 * (xs / x0) ** r["exponent"], ls="--", lw=1, color=palette.get(r["mixer"]))
        lengths = sorted(int(n) for n in d["seq_len"].unique())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set(xlabel="sequence length n", ylabel=f"{metric} ({unit})", title=mode)
        if ax is not axes[0][0] and ax.get_legend() is not None:
            ax.get_legend().remove()
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title + " (dashed: fitted power law)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def curves_plot(best: pd.DataFrame, out: Path, path: Path, title: str) -> bool:
    """Training loss (bits/byte) against training tokens, with the validation points, for each best run (the
    rows' ``curve`` files, relative to the run directory ``out``)."""
    curves = []
    for _, r in best.iterrows():
        f = out / str(r.get("curve"))
        if r.get("curve") and f.exists():
            curves.append((r["mode"], r["mixer"], json.loads(f.read_text())))
    if not curves:
        return False
    objectives = sorted({c[0] for c in curves})
    fig, axes = plt.subplots(1, len(objectives), figsize=(6 * len(objectives), 4.2), squeeze=False)
    palette = dict(zip(sorted({c[1] for c in curves}), sns.color_palette("tab10", len({c[1] for c in curves}))))
    for ax, objective in zip(axes[0], objectives):
        for _, mixer, c in (c for c in curves if c[0] == objective):
            per_step = c["tokens_per_step"]
            steps = np.array([e["step"] for e in c["train"]], dtype=float)
            loss = np.array([e["train_loss"] for e in c["train"]], dtype=float) / np.log(2)
            k = max(1, len(loss) // 50)  # moving average over ~2% of the run
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:] * per_step, smooth, color=palette[mixer], lw=1.2, label=mixer)
            ev = [(e["step"] * per_step, e["val_bpb"]) for e in c["evals"] if e.get("val_bpb") is not None]
            if ev:
                ax.plot(*zip(*ev), "o", color=palette[mixer], ms=4)
        ax.set(xlabel="training tokens", ylabel="bits per byte", title=objective)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def accuracy_plot(data: pd.DataFrame, x: str, facet: list[str], path: Path, title: str, logx: bool,
                  vline: str | None = None) -> bool:
    """Accuracy against ``x``, one panel per value of the ``facet`` columns; ``vline``: a column whose value is
    marked with a dotted vertical line (passkey: the training length)."""
    if data.empty:
        return False
    groups = list(data.groupby(facet, sort=True)) if facet else [((), data)]
    fig, axes = plt.subplots(1, len(groups), figsize=(max(7.5, 4.6 * len(groups)), 3.8), squeeze=False)
    # one colour and marker per mixer for the whole figure (every panel the same), distinct up to 20 mixers
    order = sorted(data["mixer"].unique())
    palette = dict(zip(order, sns.color_palette("tab10" if len(order) <= 10 else "tab20", len(order))))
    shapes = ["o", "X", "s", "^", "D", "v", "P"]
    markers = {m: shapes[i % len(shapes)] for i, m in enumerate(order)}
    for ax, (key, d) in zip(axes[0], groups):
        sns.lineplot(data=d.sort_values(x), x=x, y="value", hue="mixer", style="mixer", markers=markers,
                     dashes=False, ax=ax, palette=palette, hue_order=[m for m in order if m in set(d["mixer"])],
                     style_order=[m for m in order if m in set(d["mixer"])], errorbar=None, markersize=8,
                     alpha=0.8)
        if logx:
            ax.set_xscale("log", base=2)
        if vline and vline in d:
            ax.axvline(float(d[vline].iloc[0]), color="grey", ls=":", lw=1)
        key = key if isinstance(key, tuple) else (key,)
        ax.set(ylim=(-0.02, 1.02), ylabel="accuracy", xlabel=x,
               title=", ".join(f"{k}={int(v)}" for k, v in zip(facet, key)))
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        ax.grid(True, alpha=0.3)
    handles = [plt.Line2D([], [], color=palette[m], marker=markers[m], ls="", markersize=7, label=m) for m in order]
    fig.legend(handles=handles, title="mixer", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               ncol=1 if len(order) <= 12 else 2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True
