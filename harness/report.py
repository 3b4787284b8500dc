"""``OUT/report.md`` and ``OUT/plots/*.png`` from a run directory (results.jsonl, env.json, suite.yaml, specs.json).

The report can be rebuilt at any time with ``python -m harness report OUT``; it reads only the run directory (the
claims were copied into ``specs.json`` when the run started), so an old run reports the claims it was run against.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import yaml  # noqa: E402

from .analysis import (crossovers, kv_cache_per_token, ok_metric, perplexity_best, quality_table,  # noqa: E402
                       scaling_fits, state_ratios)
from .results import load_results  # noqa: E402

UNITS = {  # metric -> (scale, label)
    "time_s": (1e3, "ms"),
    "peak_tensor_bytes": (1 / 2**20, "MiB"),
    "cuda_peak_bytes": (1 / 2**20, "MiB"),
    "state_bytes": (1 / 2**10, "KiB"),
    "flops": (1e-9, "GFLOP"),
    "tokens_per_s": (1e-3, "k tok/s"),
    "peak_fraction": (100, "% of matmul peak"),
}


def _md(df: pd.DataFrame, floatfmt: str = ".3g") -> str:
    if df.empty:
        return "_(none)_\n"
    return df.to_markdown(index=False, floatfmt=floatfmt) + "\n"


def _scaling_benchmarks(suite: dict) -> dict[str, dict]:
    out = {}
    for entry in suite.get("suite", {}).get("benchmarks", []):
        if entry["kind"] == "scaling":
            params = entry.get("params", {})
            fit = {"last_points": 3, "tolerance": 0.25, **params.get("fit", {})}
            out[entry.get("name") or entry["kind"]] = {
                "fit": fit, "against": params.get("crossover_against", ["flash", "standard"]),
                "scope": params.get("scope", "layer"), "description": entry.get("description", "")}
    return out


def _description(entry: dict) -> list[str]:
    """A benchmark entry's `description` (as written in the suite) as the lines under its heading, or none."""
    return [entry["description"].strip(), ""] if entry.get("description") else []


def _entry(suite: dict, bench: str) -> dict:
    return next(e for e in suite.get("suite", {}).get("benchmarks", []) if (e.get("name") or e["kind"]) == bench)


def _op_speed_benchmarks(suite: dict) -> dict[str, str]:
    """op_speed benchmark label -> its reference implementation."""
    return {(e.get("name") or e["kind"]): e.get("params", {}).get("reference_impl") or "fast"
            for e in suite.get("suite", {}).get("benchmarks", []) if e["kind"] == "op_speed"}


def _op_speed_section(df: pd.DataFrame, bench: str, reference: str, description: list[str]) -> list[str]:
    """Per op: each implementation's median forward time, and how many times slower it is than the reference."""
    named = reference != "fast"
    lines = [f"## Benchmark `{bench}` (op_speed)", "", *description,
             "Forward time of each implementation of a mixer's operator on the same inputs, in one process. "
             + (f"`x {reference}` = time / time of our `{reference}` form at the same length"
                if named else "`x ours` = time / time of our fast form (`chunk`, `blocked`: the op's `reference_impl`) "
                              "at the same length") + " (> 1: slower than ours).", ""]
    column = f"x {reference}" if named else "x ours"
    sub = df[(df["benchmark"] == bench)] if not df.empty else df
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
        lines += [f"### `{op}`", "", _md(table, floatfmt=".4g"), ""]
    failed = sub[sub["status"] != "ok"]
    if not failed.empty:
        lines += ["Implementations that did not run:", "",
                  _md(failed[["mixer", "impl", "seq_len", "status", "error"]]), ""]
    return lines


def _pivot(df: pd.DataFrame, metric: str, mode: str, bench: str) -> pd.DataFrame:
    """mixers x seq_len table of one metric; failed cells show their status."""
    scale, _ = UNITS.get(metric, (1, ""))
    sub = df[(df["benchmark"] == bench) & (df["mode"] == mode)]
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


def _plot(df: pd.DataFrame, fits: pd.DataFrame, metric: str, modes: list[str], bench: str, path: Path,
          title: str) -> bool:
    data = ok_metric(df, metric)
    data = data[(data["benchmark"] == bench) & (data["mode"].isin(modes))]
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
            f = fits[(fits["benchmark"] == bench) & (fits["metric"] == metric) & (fits["mode"] == mode)]
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


def write_report(out: str | Path) -> Path:
    out = Path(out)
    df = load_results(out)
    env = json.loads((out / "env.json").read_text()) if (out / "env.json").exists() else {}
    suite = yaml.safe_load((out / "suite.yaml").read_text()) if (out / "suite.yaml").exists() else {}
    specs = json.loads((out / "specs.json").read_text()) if (out / "specs.json").exists() else {}
    (out / "plots").mkdir(exist_ok=True)
    meta = suite.get("suite", {})
    scaling = _scaling_benchmarks(suite)

    lines = [f"# {meta.get('suite', 'run')} report", ""]
    if meta.get("description"):
        lines += [meta["description"].strip(), ""]
    lines += master_table_section(out, meta)
    lines += ["## Environment", "",
              _md(pd.DataFrame([{"key": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v}
                                for k, v in env.items()])), ""]
    statuses = df["status"].value_counts().to_dict() if not df.empty else {}
    n_cells = df["cell_id"].nunique() if not df.empty else 0
    lines += ["## Cells", "", f"{n_cells} cells: " + ", ".join(f"{v} {k}" for k, v in sorted(statuses.items())) +
              " (rows; a measured cell has one row per metric)", ""]
    failed = df[df["status"] != "ok"] if not df.empty else df
    if not failed.empty:
        lines += ["Cells that did not produce measurements:", "",
                  _md(failed[["benchmark", "mixer", "impl", "mode", "seq_len", "status", "error"]]), ""]

    fits = scaling_fits(df, specs, {b: v["fit"] for b, v in scaling.items()})
    for bench, cfg in scaling.items():
        lines += [f"## Benchmark `{bench}` (scaling)", ""]
        lines += _description(cfg)
        if cfg["scope"] == "operator":
            lines += ["Scope: **operator**. Each mixer's core operator alone (our fast form in "
                      "`architectures.ops.catalog`, column `op_impl` of the results) on (B, n, H, d_model/H) inputs, "
                      "without the layer's projections: the cost the guide's complexity cell describes. At n < d² a "
                      "layer's O(n d²) projections hide a super-linear attention pattern; compare with the layer "
                      "scope above.", ""]
        tol = cfg["fit"]["tolerance"]
        lines += [f"### Exponents: claimed vs measured", "",
                  f"Least-squares slope of log(metric) on log(n) over the longest {cfg['fit']['last_points']} "
                  f"lengths; verdict `holds` when |measured - claimed| <= {tol}. Claims are the guide's "
                  "complexity cells (see each mixer's spec); FLOPs are held to the time claim, and decode time per "
                  "token is shown without a claim.", ""]
        f = fits[fits["benchmark"] == bench] if not fits.empty else fits
        if not f.empty:
            table = f[["mixer", "impl", "mode", "metric", "claimed_as_written", "claimed_exponent", "exponent",
                       "stderr", "r2", "n_range", "verdict"]].copy()
            table["exponent"] = [f"{e:.2f} ± {s:.2f}" if e is not None and not pd.isna(e) and not pd.isna(s)
                                 else ("" if e is None or pd.isna(e) else f"{e:.2f}")
                                 for e, s in zip(f["exponent"], f["stderr"])]
            table = table.drop(columns=["stderr"]).rename(columns={"exponent": "measured ± SE", "r2": "R²"})
            table = table.astype(object).where(table.notna(), "-")
            lines += [_md(table.sort_values(["metric", "mode", "mixer"]), floatfmt=".3f"), ""]
        if cfg["against"]:  # an entry with `crossover_against: []` has no crossover section
            cross = crossovers(df, {bench: cfg["against"]})
            lines += ["### Crossover lengths (forward time)", "",
                      "The shortest measured n from which the mixer's median forward time stays below the "
                      "baseline's at every longer measured n.", ""]
            if not cross.empty:
                lines += [_md(cross[["mixer", "against", "crossover", "speedup_at_longest", "longest_n"]],
                              floatfmt=".2f"), ""]
            else:
                lines += ["_(no forward times to compare)_", ""]
        ratios = state_ratios(df[df["benchmark"] == bench]) if not df.empty else pd.DataFrame()
        if not ratios.empty:
            longest = ratios["seq_len"].max()
            r = ratios[ratios["seq_len"] == longest][["mixer", "impl", "seq_len", "value", "ratio_to_standard"]]
            lines += ["### Decode state at the longest length", "",
                      "Bytes of the state a mixer carries after n tokens (measured from the returned state, equal "
                      "to its analytic `state_bytes`), and the ratio to `standard`'s KV cache.", "",
                      _md(r.rename(columns={"value": "state_bytes"}), floatfmt=".4g"), ""]
        kv = kv_cache_per_token(df[df["benchmark"] == bench], specs) if not df.empty else pd.DataFrame()
        if not kv.empty:
            lines += ["### KV cache per token", "",
                      "Decode cache per token (state_bytes(n) / n at the longest decode n) of the mixers whose cache "
                      "grows with the context, at this run's size and at the published configurations in their specs "
                      "(computed from `state_bytes` on the meta device), against `standard` with the same number of "
                      "heads and head size.", "",
                      _md(kv, floatfmt=".6g"), ""]
        for metric, title in [("time_s", "Median time (ms)"), ("peak_tensor_bytes", "Peak live tensor memory (MiB)"),
                              ("cuda_peak_bytes", "CUDA allocator peak (MiB)"), ("flops", "FLOPs (GFLOP)"),
                              ("peak_fraction", "Achieved FLOP/s (% of measured matmul peak)"),
                              ("state_bytes", "Decode state (KiB)")]:
            for mode in ("forward", "train", "decode"):
                table = _pivot(df, metric, mode, bench)
                if not table.empty:
                    lines += [f"### {title}: {mode}", "", _md(table), ""]
        plots = [("time_s", ["forward", "train", "decode"], "time"),
                 ("peak_tensor_bytes", ["forward", "train", "decode"], "memory"),
                 ("state_bytes", ["decode"], "state")]
        lines += ["### Plots", ""]
        for metric, modes, tag in plots:
            path = out / "plots" / f"{bench}-{tag}.png"
            if _plot(df, fits, metric, modes, bench, path, f"{bench}: {metric} vs n"):
                lines += [f"![{bench} {tag}](plots/{path.name})", ""]
    for bench, reference in _op_speed_benchmarks(suite).items():
        lines += _op_speed_section(df, bench, reference, _description(_entry(suite, bench)))
    for bench, params in _benchmarks_of_kind(suite, "perplexity").items():
        lines += _perplexity_section(df, out, bench, params, _description(_entry(suite, bench)))
    lines += recall_sections(df, out, meta)
    lines += kind_sections(out, df, meta, env, specs)
    (out / "report.md").write_text("\n".join(lines))
    if not fits.empty:
        fits.to_csv(out / "fits.csv", index=False)
    return out / "report.md"


# ---- perplexity -----------------------------------------------------------------------------------------------------

def _benchmarks_of_kind(suite: dict, kind: str) -> dict[str, dict]:
    return {e.get("name") or e["kind"]: e.get("params", {}) for e in suite.get("suite", {}).get("benchmarks", [])
            if e["kind"] == kind}


def _perplexity_section(df: pd.DataFrame, out: Path, bench: str, params: dict, description: list[str]) -> list[str]:
    baseline = params.get("baseline", "standard")
    lines = [f"## Benchmark `{bench}` (perplexity)", "", *description,
             "Every mixer in the same byte-level DecoderLM (vocabulary 256), trained from the same seed on the same "
             "batches for the same token budget (`train_tokens`) with the same optimiser and schedule; the best "
             "learning rate of the sweep per mixer. Validation bits-per-byte (`val_bpb`) scores every byte of the "
             "held-out split once (non-overlapping windows of the training context; `masked_lm`: the masked bytes "
             "only), `val_ppl` = 2^bpb is the per-byte perplexity.", "",
             f"**Quality** = 100 × ppl(`{baseline}`) / ppl(mixer) under the same budget and objective "
             "(= 100 × 2^(bpb(baseline) − bpb(mixer))): 100 is as good as the baseline, above 100 better. "
             f"`causal_lm` mixers are compared with causal `{baseline}`; bidirectional-only mixers are trained as "
             f"masked-LM encoders (15% of bytes masked) and compared with a bidirectional `{baseline}` encoder "
             "(`masked_lm`).", ""]
    sub = df[df["benchmark"] == bench] if not df.empty else df
    q = quality_table(sub, baseline)
    if q.empty:
        return lines + ["_(no perplexity results)_", ""]
    corpus = sub["corpus"].dropna().unique() if "corpus" in sub else []
    if len(corpus):
        fraction = params.get("corpus", {}).get("val_fraction", 0.1)
        lines += [f"Corpus: {', '.join(map(str, corpus))}; validation split: its last {fraction:.0%} of bytes "
                  "(contiguous, never trained on).", ""]
    table = q[["mode", "seq_len", "mixer", "impl", "val_bpb", "val_ppl", "quality", "lr", "train_tokens",
               "tokens_per_s"]].rename(columns={"mode": "objective", "seq_len": "context", "quality": "quality %",
                                                "tokens_per_s": "train tok/s"})
    table["train_tokens"] = table["train_tokens"].astype("Int64")
    lines += [_md(table, floatfmt=".4g"), ""]
    sweep = sub[(sub["status"] == "ok") & (sub["metric"] == "val_bpb")]
    if sweep["lr"].nunique() > 1:
        sweep = sweep.assign(cell=[f"{'*' if b else ''}{v:.4f}" if v is not None and not pd.isna(v) else "diverged"
                                   for v, b in zip(sweep["value"], sweep["best"])])
        grid = sweep.pivot_table(index=["mode", "seq_len", "mixer"], columns="lr", values="cell",
                                 aggfunc="last").reset_index()
        grid.columns = [f"lr={c:g}" if isinstance(c, float) else str(c) for c in grid.columns]
        lines += ["### Learning-rate sweep (val_bpb; * = best)", "",
                  grid.to_markdown(index=False, disable_numparse=True) + "\n", ""]
    failed = sub[sub["status"] != "ok"]
    if not failed.empty:
        lines += [f"Cells without a result: " + ", ".join(f"{m} ({s})" for m, s in
                                                          zip(failed["mixer"], failed["status"])) + ".", ""]
    path = out / "plots" / f"{bench}-curves.png"
    if _plot_curves(sub, out, path, bench):
        lines += [f"![{bench} loss curves](plots/{path.name})", ""]
    return lines


def _plot_curves(df: pd.DataFrame, out: Path, path: Path, bench: str) -> bool:
    """Training loss (bits/byte) against training tokens, with the validation points, for each best run."""
    best = df[(df["status"] == "ok") & (df["metric"] == "val_bpb") & (df["best"] == True)]  # noqa: E712
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
    fig.suptitle(f"{bench}: training loss (line, smoothed) and validation bpb (dots)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---- recall benchmarks (mqar, selective_copy, passkey) ----------------------------------------------------------

RECALL_KINDS = ("mqar", "selective_copy", "passkey")


def _best_accuracy(df: pd.DataFrame, bench: str) -> pd.DataFrame:
    """Best-lr ``accuracy`` rows of a recall benchmark (one per cell, and per eval_len for passkey)."""
    acc = ok_metric(df, "accuracy")
    acc = acc[acc["benchmark"] == bench]
    return acc[acc["best"] == True] if "best" in acc else acc  # noqa: E712


def _recall_table(df: pd.DataFrame, bench: str, keys: list[str]) -> pd.DataFrame:
    """mixers x configurations (keys) of the best accuracy; failed cells show their status."""
    best = _best_accuracy(df, bench)
    sub = df[df["benchmark"] == bench]
    failed = sub[sub["status"] != "ok"]
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


def _recall_plot(data: pd.DataFrame, x: str, facet: list[str], path: Path, title: str, logx: bool,
                 vline: str | None = None) -> bool:
    if data.empty:
        return False
    groups = list(data.groupby(facet, sort=True)) if facet else [((), data)]
    fig, axes = plt.subplots(1, len(groups), figsize=(max(7.5, 4.6 * len(groups)), 3.8), squeeze=False)
    palette = dict(zip(sorted(data["mixer"].unique()), sns.color_palette("tab10", data["mixer"].nunique())))
    for ax, (key, d) in zip(axes[0], groups):
        sns.lineplot(data=d.sort_values(x), x=x, y="value", hue="mixer", style="mixer", markers=True, dashes=False,
                     ax=ax, palette=palette, errorbar=None, markersize=8, alpha=0.8)
        if logx:
            ax.set_xscale("log", base=2)
        if vline and vline in d:
            ax.axvline(float(d[vline].iloc[0]), color="grey", ls=":", lw=1)
        key = key if isinstance(key, tuple) else (key,)
        ax.set(ylim=(-0.02, 1.02), ylabel="accuracy", xlabel=x,
               title=", ".join(f"{k}={int(v)}" for k, v in zip(facet, key)))
        if ax is not axes[0][0] and ax.get_legend() is not None:
            ax.get_legend().remove()
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def recall_sections(df: pd.DataFrame, out: Path, meta: dict) -> list[str]:
    """Sections of the recall benchmarks: best-lr accuracy tables, every lr, and the plots."""
    lines: list[str] = []
    for entry in meta.get("benchmarks", []):
        kind, bench = entry["kind"], entry.get("name") or entry["kind"]
        if kind not in RECALL_KINDS or df.empty:
            continue
        keys = {"mqar": ["seq_len", "n_pairs", "d_model"], "selective_copy": ["seq_len", "d_model"],
                "passkey": ["seq_len", "d_model", "eval_len"]}[kind]
        lines += [f"## Benchmark `{bench}` ({kind})", "", *_description(entry),
                  "Test accuracy of a 2-layer LM per mixer, the best of the learning-rate sweep (every lr is listed "
                  "below and in results.jsonl with `lr` and `best`); training stops early at the suite's "
                  "early-stop accuracy." + (" For passkey, seq_len is the training length and eval_len the "
                                            "evaluated one." if kind == "passkey" else ""), ""]
        table = _recall_table(df, bench, keys)
        lines += [_md(table), ""] if not table.empty else ["_(no accuracy measured)_", ""]
        acc = ok_metric(df, "accuracy")
        acc = acc[acc["benchmark"] == bench]
        if not acc.empty:
            cols = [c for c in ["mixer", *keys, "lr", "value", "best"] if c in acc]
            steps = ok_metric(df, "train_steps")
            steps = steps[steps["benchmark"] == bench][["cell_id", "lr", "value"]].rename(columns={"value": "steps"})
            every = acc.merge(steps, on=["cell_id", "lr"], how="left") if not steps.empty else acc
            every = every[cols + (["steps"] if "steps" in every else [])].rename(columns={"value": "accuracy"})
            lines += ["<details><summary>every learning rate</summary>", "", _md(every, floatfmt=".4g"),
                      "</details>", ""]
        best = _best_accuracy(df, bench)
        plots = []
        if kind == "mqar" and not best.empty:
            state = ok_metric(df, "state_bytes")
            state = state[state["benchmark"] == bench][["cell_id", "value"]].rename(columns={"value": "state_bytes"})
            zoo = best.merge(state, on="cell_id")
            plots.append((zoo, "state_bytes", ["seq_len", "n_pairs"], "state", True,
                          f"{bench}: accuracy vs decode-state bytes of one layer (Zoology's figure)"))
            plots.append((best, "seq_len", ["d_model"], "length", True, f"{bench}: accuracy vs sequence length"))
        elif kind == "selective_copy" and not best.empty:
            plots.append((best, "seq_len", ["d_model"], "length", True, f"{bench}: accuracy vs sequence length"))
        elif kind == "passkey" and not best.empty:
            plots.append((best, "eval_len", ["seq_len", "d_model"], "length", True,
                          f"{bench}: accuracy vs evaluated length (dotted: training length)"))
        for data, x, facet, tag, logx, title in plots:
            path = out / "plots" / f"{bench}-{tag}.png"
            if _recall_plot(data, x, [f for f in facet if f in data], path, title, logx,
                            vline="seq_len" if kind == "passkey" else None):
                lines += [f"![{bench} {tag}](plots/{path.name})", ""]
    return lines


# ---- the Master Comparison Table (a suite with a `claims` entry) -------------------------------------------------

def master_table_section(out: Path, meta: dict) -> list[str]:
    """The guide's table with measured columns beside the claimed ones and a verdict per claim (harness.claims)."""
    import shutil

    from .claims import RunData, evaluate, load_claims, resolve_claims_path

    entries = [e for e in meta.get("benchmarks", []) if e["kind"] == "claims"]
    if not entries:
        return []
    copy = out / "claims.yaml"
    if not copy.exists():  # the claims the run is checked against stay with the run
        shutil.copyfile(resolve_claims_path((entries[0].get("params") or {}).get("file")), copy)
    cf = load_claims(copy)
    params = entries[0].get("params") or {}
    methods, claims = evaluate(RunData.load(out), cf, only=params.get("only"),
                               methods_table=params.get("methods_table", True))
    claims.to_csv(out / "claims.csv", index=False)
    if not params.get("methods_table", True):
        return ["## The guide's claims, measured", "",
                "Each claim, the figure it is held to, the tolerance, the measured figure and the verdict (`holds`, "
                "`does not hold`, `not measurable here` with the reason); from `claims.yaml` (a copy of the "
                "repository's `claims/guide.yaml`), also in `claims.csv`.", "",
                _md(claims.drop(columns=["source"])), ""]
    t = cf.tolerances
    lines = ["## The guide's Master Comparison Table, measured", "",
             "The guide's cells beside the figures measured in this run, and a verdict per claim: `holds`, "
             "`does not hold`, or `not measurable here` (the claims table below says why). Claims, comparisons and "
             "tolerances come from `claims.yaml` (a copy of the repository's `claims/guide.yaml`).", "",
             f"- **Exponents** are least-squares slopes of log(figure) on log(n) over the longest lengths of the "
             f"scaling sweep (`analysis.scaling_fits`, ± its standard error; where several scaling entries measure a "
             f"method, the fit over the widest range of n), held to the claimed exponent within "
             f"± {t.exponent:g}: time = forward `time_s` (FLOPs exponent beside it), prefill memory = forward "
             "`peak_tensor_bytes`, decode state = `state_bytes` after n tokens. A memory cell is held to the prefill "
             "exponent or, where the claims file says so (Mamba's O(d)), to the decode-state exponent.",
             f"- **Quality** = 100 x ppl(standard) / ppl(method), both trained with the same budget and "
             f"hyperparameters (`perplexity` benchmark; a bidirectional method against a bidirectional standard). "
             f"\"~X%\" holds within ± {t.quality_points:g} points, \"X%+\" from X - {t.quality_at_least_points:g}.",
             "- **MQAR accuracy**: best learning rate, mean over the MQAR configurations the method ran (per "
             "configuration in the `mqar` section). **tokens/s**: forward of one layer at the longest length it ran.",
             "", _md(methods), "", "### Claims and verdicts", "",
             "Every claim checked, the figure it is held to, the tolerance, the measured figure and the verdict "
             "(also in `claims.csv`).", "",
             _md(claims.drop(columns=["source"])), ""]
    return lines


# ---- kinds that render their own section (the report-section contract; see harness/benchmarks) ---------------------

@dataclass
class SectionRun:
    """What a kind's ``report_section(run, entry)`` reads: the run directory and its rows."""
    out: Path
    df: pd.DataFrame
    suite: dict
    env: dict
    specs: dict

    def rows(self, entry_label: str) -> pd.DataFrame:
        if self.df.empty or "benchmark" not in self.df:
            return self.df.iloc[0:0]
        return self.df[self.df["benchmark"] == entry_label].dropna(axis=1, how="all")


def kind_sections(out: Path, df: pd.DataFrame, meta: dict, env: dict, specs: dict) -> list[str]:
    """The sections of the suite's entries whose kind defines ``report_section`` (in suite order)."""
    from types import SimpleNamespace

    from .benchmarks import BENCHMARKS

    run = SectionRun(out, df, meta, env, specs)
    lines: list[str] = []
    for e in meta.get("benchmarks", []):
        cls = BENCHMARKS.get(e["kind"])
        if not hasattr(cls, "report_section"):
            continue
        entry = SimpleNamespace(kind=e["kind"], label=e.get("name") or e["kind"],
                                description=e.get("description") or "", params=e.get("params") or {})
        lines += cls.report_section(run, entry)
    return lines
