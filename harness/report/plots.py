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


MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
LINESTYLES = ["-", "--", "-.", ":"]
# the same encodings in plotly (the HTML report's interactive plots)
PLOTLY_SYMBOLS = dict(zip(MARKERS, ["circle", "square", "triangle-up", "diamond", "triangle-down", "cross", "x",
                                    "star", "triangle-left", "triangle-right", "hexagon", "pentagon"]))
PLOTLY_DASH = {"-": "solid", "--": "dash", "-.": "dashdot", ":": "dot"}


def series(name: str, x, y, style: dict | None = None, kind: str = "data", **extra) -> dict:
    """One line of a plot's data file (``plots/<name>.json``, next to its PNG): what the HTML report redraws."""
    style = style or {}
    colour = matplotlib.colors.to_hex(style["color"]) if "color" in style else "#888888"
    return {"name": name, "x": [float(v) for v in x], "y": [float(v) for v in y], "kind": kind, "color": colour,
            "symbol": PLOTLY_SYMBOLS.get(style.get("marker"), "circle"),
            "dash": PLOTLY_DASH.get(style.get("linestyle"), "solid") if kind == "data" else "dash", **extra}


def save_data(path: Path, title: str, panels: list[dict]) -> None:
    """``plots/X.json`` beside ``plots/X.png``: the plotted values, panel by panel (title, axis labels and scales,
    series), so that the HTML report draws the same figure interactively from the run directory."""
    path.with_suffix(".json").write_text(json.dumps({"title": title, "panels": panels}))


def styles(rows: pd.DataFrame, specs: dict) -> dict[str, dict]:
    """mixer label -> matplotlib style: the colour says the family (``specs[mixer_name]["family"]``), the marker
    and line style tell the mixers of one family apart, so no two mixers share an encoding."""
    pairs = rows[["mixer", "mixer_name"]].drop_duplicates("mixer") if "mixer_name" in rows else \
        rows[["mixer"]].drop_duplicates().assign(mixer_name=lambda d: d["mixer"])
    family = {m: specs.get(n, {}).get("family", "other") for m, n in zip(pairs["mixer"], pairs["mixer_name"])}
    families = sorted(set(family.values()) | {s.get("family", "other") for s in specs.values()})  # run-wide colours
    colours = dict(zip(families, sns.color_palette("tab10" if len(families) <= 10 else "tab20", len(families))))
    out, seen = {}, {f: 0 for f in families}
    for m in sorted(family, key=lambda m: (family[m], m)):
        i = seen[family[m]]
        seen[family[m]] += 1
        out[m] = {"color": colours[family[m]], "marker": MARKERS[i % len(MARKERS)],
                  "linestyle": LINESTYLES[(i // len(MARKERS)) % len(LINESTYLES)], "family": family[m]}
    return out


def _legend(fig, axes, style: dict[str, dict]) -> None:
    """One legend for the figure, outside the panels (right), grouped by family."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=s["color"], marker=s["marker"], linestyle=s["linestyle"], ms=5,
                      label=f"{m} ({s['family']})") for m, s in style.items()]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.93), fontsize=8, frameon=False,
               ncol=1 if len(handles) <= 24 else 2)


def _log2_x(ax, lengths: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n) for n in lengths])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _slope_guides(ax, d: pd.DataFrame, exponents: list[float]) -> None:
    """Grey reference lines of the claimed slopes (n^k), anchored at the panel's lowest point at the shortest n."""
    x0, x1 = float(d["seq_len"].min()), float(d["seq_len"].max())
    y0 = float(d[d["seq_len"] == x0]["y"].min())
    for k in sorted(set(exponents)):
        ax.plot([x0, x1], [y0, y0 * (x1 / x0) ** k], color="0.55", lw=0.9, ls=(0, (1, 2)), zorder=0)
        ax.annotate(f"∝ n^{k:g} (claimed)", (x1, y0 * (x1 / x0) ** k), fontsize=7, color="0.4",
                    xytext=(2, 0), textcoords="offset points", va="center")


def scaling_plot(rows: pd.DataFrame, fits: pd.DataFrame, metric: str, modes: list[str], path: Path,
                 title: str, specs: dict | None = None) -> bool:
    """One panel per mode: the metric against n on log-log axes, each mixer's fitted power law (dashed, over the
    fitted lengths) and the claimed slopes as grey reference lines."""
    data = ok_metric(rows, metric)
    data = data[data["mode"].isin(modes)]
    if data.empty:
        return False
    scale, unit = UNITS.get(metric, (1, ""))
    data = data.assign(y=data["value"].astype(float) * scale)
    present = [m for m in modes if m in set(data["mode"])]
    style = styles(data, specs or {})
    fig, axes = plt.subplots(1, len(present), figsize=(5.2 * len(present), 4.4), squeeze=False)
    panels = []
    for ax, mode in zip(axes[0], present):
        d = data[data["mode"] == mode]
        panel = {"title": mode, "xlabel": "sequence length n", "ylabel": f"{metric} ({unit})", "logx": True,
                 "logy": True, "series": []}
        panels.append(panel)
        for mixer, g in d.groupby("mixer", sort=True):
            g = g.sort_values("seq_len")
            s = style[mixer]
            ax.plot(g["seq_len"], g["y"], color=s["color"], marker=s["marker"], linestyle=s["linestyle"], lw=1.2,
                    ms=4.5, alpha=0.9)
            panel["series"].append(series(mixer, g["seq_len"], g["y"], s, family=s["family"]))
        f = fits[(fits["metric"] == metric) & (fits["mode"] == mode)] if not fits.empty else fits
        for _, r in f.iterrows():
            if r["exponent"] is None or pd.isna(r["exponent"]) or not r["n_range"]:
                continue
            lo, hi = (int(v) for v in r["n_range"].split("-"))
            pts = d[(d["mixer"] == r["mixer"]) & (d["seq_len"] >= lo) & (d["seq_len"] <= hi)]
            if pts.empty:
                continue
            xs = np.array([lo, hi], dtype=float)  # the fitted line through the geometric mean of the fitted points
            x0, y0 = np.exp(np.log(pts["seq_len"]).mean()), np.exp(np.log(pts["y"]).mean())
            ys = y0 * (xs / x0) ** r["exponent"]
            ax.plot(xs, ys, ls=(0, (4, 2)), lw=1.8, alpha=0.5, color=style[r["mixer"]]["color"])
            panel["series"].append(series(f"{r['mixer']} fit: n^{r['exponent']:.2f}", xs, ys, style[r["mixer"]],
                                          kind="fit"))
        claimed = [float(c) for c in f["claimed_exponent"].dropna()] if "claimed_exponent" in f else []
        if claimed:
            _slope_guides(ax, d, claimed)
        _log2_x(ax, sorted(int(n) for n in d["seq_len"].unique()))
        ax.set_yscale("log")
        ax.set(xlabel="sequence length n", ylabel=f"{metric} ({unit})", title=mode)
        ax.grid(True, which="major", alpha=0.3)
    _legend(fig, axes, style)
    fig.suptitle(title + "  (dashed: fitted power law; grey dotted: claimed slopes)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    save_data(path, title + " (dashed: fitted power law)", panels)
    return True


def curves_plot(best: pd.DataFrame, out: Path, path: Path, title: str, specs: dict | None = None) -> bool:
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
    style = styles(best, specs or {})
    for ax, objective in zip(axes[0], objectives):
        for _, mixer, c in (c for c in curves if c[0] == objective):
            per_step = c["tokens_per_step"]
            steps = np.array([e["step"] for e in c["train"]], dtype=float)
            loss = np.array([e["train_loss"] for e in c["train"]], dtype=float) / np.log(2)
            k = max(1, len(loss) // 50)  # moving average over ~2% of the run
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            s = style[mixer]
            ax.plot(steps[k - 1:] * per_step, smooth, color=s["color"], linestyle=s["linestyle"], lw=1.2)
            ev = [(e["step"] * per_step, e["val_bpb"]) for e in c["evals"] if e.get("val_bpb") is not None]
            if ev:
                ax.plot(*zip(*ev), s["marker"], color=s["color"], ms=4.5)
        ax.set(xlabel="training tokens", ylabel="bits per byte", title=objective)
        ax.grid(True, alpha=0.3)
    _legend(fig, axes, {m: s for m, s in style.items() if m in {c[1] for c in curves}})
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def accuracy_plot(data: pd.DataFrame, x: str, facet: list[str], path: Path, title: str, logx: bool,
                  vline: str | None = None, specs: dict | None = None) -> bool:
    """Accuracy against ``x``, one panel per value of the ``facet`` columns; ``vline``: a column whose value is
    marked with a dotted vertical line (passkey: the training length)."""
    if data.empty:
        return False
    groups = list(data.groupby(facet, sort=True)) if facet else [((), data)]
    fig, axes = plt.subplots(1, len(groups), figsize=(max(7.5, 4.6 * len(groups)), 3.8), squeeze=False)
    style = styles(data, specs or {})
    panels = []
    for ax, (key, d) in zip(axes[0], groups):
        k = key if isinstance(key, tuple) else (key,)
        panel = {"title": ", ".join(f"{f}={int(v)}" for f, v in zip(facet, k)), "xlabel": x, "ylabel": "accuracy",
                 "logx": logx, "logy": False, "series": []}
        panels.append(panel)
        for mixer, g in d.groupby("mixer", sort=True):
            g = g.sort_values(x)
            s = style[mixer]
            ax.plot(g[x], g["value"], color=s["color"], marker=s["marker"], linestyle=s["linestyle"], ms=6,
                    alpha=0.85)
            panel["series"].append(series(mixer, g[x], g["value"], s, family=s["family"]))
        if logx:
            ax.set_xscale("log", base=2)
        if vline and vline in d:
            ax.axvline(float(d[vline].iloc[0]), color="grey", ls=":", lw=1)
        key = key if isinstance(key, tuple) else (key,)
        ax.set(ylim=(-0.02, 1.02), ylabel="accuracy", xlabel=x,
               title=", ".join(f"{k}={int(v)}" for k, v in zip(facet, key)))
        ax.grid(True, alpha=0.3)
    _legend(fig, axes, style)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    save_data(path, title, panels)
    return True
