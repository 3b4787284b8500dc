"""From tidy rows to conclusions: exponent fits against the guide's claims, crossover lengths, decode-state ratios.

Exponent fit: least squares of log(metric) on log(n) over the longest ``last_points`` lengths of a series (the
asymptotic part: at short n, projections, which are linear in n, and fixed overheads dominate every method). The
slope's standard error and R^2 are reported, and the verdict is "holds" when |slope - claimed| <= tolerance.

Which claim a metric is held to (``CLAIMS``): time and FLOPs of forward/train -> the spec's time exponent; peak
memory of forward/train -> its memory exponent; decode state bytes -> its state exponent. Decode time per token is
fitted and shown without a claim (at the lengths a CPU can reach, fixed per-step costs hide the cache read).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# (metric, mode) -> which exponent of the spec it is checked against
CLAIMS = {
    ("time_s", "forward"): "time_exponent",
    ("time_s", "train"): "time_exponent",
    ("flops", "forward"): "time_exponent",
    ("flops", "train"): "time_exponent",
    ("peak_tensor_bytes", "forward"): "memory_exponent",
    ("peak_tensor_bytes", "train"): "memory_exponent",
    ("cuda_peak_bytes", "forward"): "memory_exponent",
    ("cuda_peak_bytes", "train"): "memory_exponent",
    ("state_bytes", "decode"): "state_exponent",
    ("time_s", "decode"): None,  # fitted and shown, but the guide claims nothing about per-token decode time
}
SERIES = ["benchmark", "mixer", "mixer_name", "impl", "mode", "batch", "d_model", "n_heads", "dtype", "seed"]


@dataclass
class Fit:
    exponent: float
    stderr: float
    r2: float
    points: int
    n_min: int
    n_max: int


def fit_exponent(n: np.ndarray, y: np.ndarray) -> Fit | None:
    """Slope of log y on log n, its standard error and R^2. None if fewer than 2 usable points."""
    keep = (n > 0) & (y > 0) & np.isfinite(y)
    n, y = n[keep].astype(float), y[keep].astype(float)
    if len(n) < 2 or len(set(n)) < 2:
        return None
    x, ly = np.log(n), np.log(y)
    slope, intercept = np.polyfit(x, ly, 1)
    resid = ly - (slope * x + intercept)
    ss_res = float(resid @ resid)
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res < 1e-20 else 0.0)
    dof = len(n) - 2
    sxx = float(((x - x.mean()) ** 2).sum())
    stderr = math.sqrt(ss_res / dof / sxx) if dof > 0 else float("nan")
    return Fit(float(slope), stderr, r2, len(n), int(n.min()), int(n.max()))


def verdict(measured: float | None, claimed: float | None, tolerance: float) -> str:
    if claimed is None:
        return "no claim"
    if measured is None:
        return "not measurable here"
    return "holds" if abs(measured - claimed) <= tolerance else "does not hold"


def ok_metric(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    if df.empty or "metric" not in df:
        return df.iloc[0:0]
    return df[(df["status"] == "ok") & (df["metric"] == metric)]


def scaling_fits(df: pd.DataFrame, specs: dict, fit_params: dict[str, dict]) -> pd.DataFrame:
    """One row per (series, metric) with a claim or a fit. fit_params: benchmark label -> {last_points, tolerance}."""
    out = []
    if df.empty:
        return pd.DataFrame()
    for (metric, mode), claim_key in CLAIMS.items():
        sub = ok_metric(df, metric)
        sub = sub[sub["mode"] == mode]
        for key, g in sub.groupby(SERIES, sort=False):
            series = dict(zip(SERIES, key))
            params = fit_params.get(series["benchmark"])
            if params is None:
                continue
            g = g.sort_values("seq_len").drop_duplicates("seq_len", keep="last")
            g = g.tail(params["last_points"])
            fit = fit_exponent(g["seq_len"].to_numpy(), g["value"].to_numpy(dtype=float))
            spec = specs.get(series["mixer_name"], {})
            claimed = spec.get(claim_key) if claim_key else None
            written = {"time_exponent": spec.get("claimed_time"), "memory_exponent": spec.get("claimed_memory"),
                       "state_exponent": "O(n)" if claimed == 1 else ("O(1)" if claimed == 0 else None),
                       None: None}[claim_key]
            out.append({
                **series, "metric": metric, "claim": (claim_key or "none").replace("_exponent", ""),
                "claimed_as_written": written, "claimed_exponent": claimed,
                "exponent": fit.exponent if fit else None, "stderr": fit.stderr if fit else None,
                "r2": fit.r2 if fit else None, "points": fit.points if fit else len(g),
                "n_range": f"{fit.n_min}-{fit.n_max}" if fit else "",
                "n_min": fit.n_min if fit else None, "n_max": fit.n_max if fit else None,
                "tolerance": params["tolerance"],
                "verdict": verdict(fit.exponent if fit else None, claimed, params["tolerance"]),
            })
    return pd.DataFrame(out)


def crossovers(df: pd.DataFrame, against: dict[str, list[str]], mode: str = "forward") -> pd.DataFrame:
    """For each mixer and baseline: the smallest n from which the mixer's median time is below the baseline's at
    every longer measured n. against: benchmark label -> baseline mixer labels."""
    times = ok_metric(df, "time_s")
    times = times[times["mode"] == mode]
    out = []
    for bench, baselines in against.items():
        tb = times[times["benchmark"] == bench]
        group_cols = ["impl", "batch", "d_model", "n_heads", "dtype"]
        for mixer, gm in tb.groupby("mixer", sort=True):
            for base in baselines:
                if base == mixer:
                    continue
                gb = tb[tb["mixer"] == base]
                if gb.empty:
                    continue
                merged = gm.merge(gb, on=["seq_len", "batch", "d_model", "n_heads", "dtype"], suffixes=("", "_b"))
                if merged.empty:
                    continue
                merged = merged.sort_values("seq_len")
                faster = (merged["value"] < merged["value_b"]).to_numpy()
                lengths = merged["seq_len"].to_numpy()
                # smallest index from which the mixer stays faster
                idx = None
                for i in range(len(faster) - 1, -1, -1):
                    if faster[i]:
                        idx = i
                    else:
                        break
                last = merged.iloc[-1]
                if idx is None:
                    text = f"not within sweep (<= {int(lengths[-1])})"
                elif idx == 0:
                    text = f"<= {int(lengths[0])} (faster at every measured n)"
                else:
                    text = str(int(lengths[idx]))
                out.append({"benchmark": bench, "mixer": mixer, "against": base,
                            "crossover_n": int(lengths[idx]) if idx is not None else None, "crossover": text,
                            "speedup_at_longest": float(last["value_b"] / last["value"]),
                            "longest_n": int(lengths[-1]), **{c: last[c] for c in group_cols[1:]}})
    return pd.DataFrame(out)


def state_ratios(df: pd.DataFrame, reference: str = "standard") -> pd.DataFrame:
    """Decode state bytes of each mixer and its ratio to the reference mixer's at the same n and shape."""
    st = ok_metric(df, "state_bytes")
    if st.empty:
        return pd.DataFrame()
    keys = ["benchmark", "seq_len", "batch", "d_model", "n_heads", "dtype"]
    ref = st[st["mixer"] == reference][keys + ["value"]].rename(columns={"value": "reference_bytes"})
    merged = st.merge(ref, on=keys, how="left")
    merged["ratio_to_" + reference] = merged["value"] / merged["reference_bytes"]
    return merged[["benchmark", "mixer", "impl"] + keys[1:] + ["value", "reference_bytes", "ratio_to_" + reference]]


def kv_cache_per_token(df: pd.DataFrame, specs: dict) -> pd.DataFrame:
    """Decode cache per token of the mixers whose cache grows with the context (state exponent 1): at each decode
    size of the run and at the published configurations of their specs, against ``standard``'s KV cache at the same
    number of heads and head size. Figures come from ``state_bytes`` of mixers built on the meta device (no memory),
    at the longest decode length n: per token = state_bytes(n) / n. ``df``: decode rows (measured ``state_bytes``
    rows, or the planned decode cells of a run, as ``Scaling.run_figures`` passes them when the run starts)."""
    import torch

    import architectures

    st = ok_metric(df, "state_bytes") if "metric" in df else df
    st = st[st["mode"] == "decode"] if not st.empty else st
    out = []

    def row(mixer: str, name: str, config: str, d_model: int, n_heads: int, head_dim: int, hparams: dict,
            dtype: str, n: int) -> dict:
        dt = getattr(torch, dtype)
        out = {"mixer": mixer, "config": config, "n_heads": n_heads, "head_dim": head_dim, "dtype": dtype}
        try:
            with torch.device("meta"):
                m = architectures.create_mixer(name, d_model, n_heads, **hparams)
                std = architectures.create_mixer("standard", n_heads * head_dim, n_heads)
            per_token = m.state_bytes(1, n, dt) / n
            std_per_token = std.state_bytes(1, n, dt) / n
        except Exception as err:  # a mixer that cannot be built without data: say so in the table
            return {**out, "note": f"not evaluated: {type(err).__name__}: {err}"}
        return {**out, "elements_per_token": per_token / dt.itemsize, "bytes_per_token": per_token,
                "standard_elements_per_token": std_per_token / dt.itemsize,
                "compression_vs_standard": std_per_token / per_token}

    for (mixer, name, d_model, n_heads, dtype), g in st.groupby(["mixer", "mixer_name", "d_model", "n_heads", "dtype"]):
        spec = specs.get(name, {})
        if spec.get("state_exponent") != 1 or name not in architectures.list_mixers():
            continue
        n = int(g["seq_len"].max())
        hparams = dict(g["hparams"].iloc[0] or {}) if "hparams" in g else {}
        out.append(row(mixer, name, f"run: d_model={d_model}, n={n}", int(d_model), int(n_heads),
                       int(d_model) // int(n_heads), hparams, dtype, n))
        for label, c in spec.get("published_configs", {}).items():
            out.append(row(mixer, name, f"{label}: d_model={c['d_model']}", c["d_model"], c["n_heads"],
                           c["head_dim"], c["hparams"], dtype, n))
    return pd.DataFrame(out).drop_duplicates(subset=["mixer", "config", "dtype"]) if out else pd.DataFrame()


# ---- verdicts with a spread ------------------------------------------------------------------------------------------

INCONCLUSIVE = "inconclusive at this budget"


def interval_verdict(lo: float, hi: float, band_lo: float = -math.inf, band_hi: float = math.inf) -> str:
    """The verdict of a figure known only up to its spread [lo, hi] (e.g. min and max over seeds) against the
    claim "the figure lies in [band_lo, band_hi]": ``holds`` when the whole spread lies inside, ``does not hold``
    when none of it does, ``inconclusive at this budget`` when the spread straddles an edge of the tolerance.
    A single measurement (lo == hi) gets a plain verdict."""
    if lo > hi:
        raise ValueError(f"interval [{lo}, {hi}] is empty")
    if band_lo <= lo and hi <= band_hi:
        return "holds"
    if hi < band_lo or lo > band_hi:
        return "does not hold"
    return INCONCLUSIVE


# ---- perplexity -----------------------------------------------------------------------------------------------------

QUALITY_KEYS = ["benchmark", "mode", "seq_len", "batch", "d_model", "n_heads", "dtype", "seed"]
PERPLEXITY_METRICS = ["val_bpb", "val_ppl", "val_loss", "tokens_per_s", "train_tokens", "model_params", "lr"]


def with_train_seed(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with a ``train_seed`` column: rows written before the sweep had seeds trained at the cell's seed only."""
    if "train_seed" in df:
        return df.assign(train_seed=df["train_seed"].fillna(df["seed"]).astype(int))
    return df.assign(train_seed=df["seed"])


def perplexity_best(df: pd.DataFrame, kind: str = "perplexity") -> pd.DataFrame:
    """One row per perplexity cell and training seed of its best learning rate (rows marked ``best``): the
    metrics side by side, with ``train_seed``."""
    if df.empty or "best" not in df:
        return pd.DataFrame()
    d = df[(df["kind"] == kind) if "kind" in df else df.index == df.index]  # rows of one entry need no kind
    d = d[(d["status"] == "ok") & (d["best"] == True)]  # noqa: E712 (object column)
    d = with_train_seed(d[d["metric"].isin(PERPLEXITY_METRICS)])
    if d.empty:
        return pd.DataFrame()
    index = QUALITY_KEYS + ["mixer", "mixer_name", "impl", "train_seed"]
    wide = d.pivot_table(index=index, columns="metric", values="value", aggfunc="last").reset_index()
    wide.columns.name = None
    if "steps" in d:  # the budget, on every row since the seeded sweep
        budget = d.groupby(index)["steps"].last().reset_index()
        wide = wide.merge(budget, on=index, how="left")
    return wide


def quality_table(df: pd.DataFrame, baseline: str = "standard", kind: str = "perplexity") -> pd.DataFrame:
    """Quality % of each mixer against ``baseline`` under the same budget, per objective (``mode``) and cell shape:

        quality = 100 x ppl(baseline) / ppl(mixer) = 100 x 2 ** (bpb(baseline) - bpb(mixer))

    with ppl the per-byte validation perplexity of the best learning rate, computed per training seed (seed k of
    the mixer against seed k of the baseline: the same batches), then summarised over the seeds both ran:
    ``quality`` (mean), ``quality_min``, ``quality_max``, ``seeds``; ``val_bpb`` is the mean over seeds, with
    ``val_bpb_min`` / ``val_bpb_max``. 100 = as good as the baseline, above 100 better. A cell whose group has no
    baseline row gets no quality (NaN). The budget columns (``steps``, ``train_tokens``, ``model_params``) are
    the cell's."""
    best = perplexity_best(df, kind)
    if not best.empty and "val_bpb" not in best and "val_ppl" in best:
        best["val_bpb"] = np.log2(best["val_ppl"].astype(float))
    if best.empty or "val_bpb" not in best:
        return pd.DataFrame()
    if "val_ppl" not in best:
        best["val_ppl"] = 2.0 ** best["val_bpb"]
    keys = QUALITY_KEYS + ["train_seed"]
    ref = best[best["mixer"] == baseline][keys + ["val_bpb"]].rename(columns={"val_bpb": "baseline_bpb"})
    merged = best.merge(ref, on=keys, how="left")
    merged["quality"] = 100.0 * 2.0 ** (merged["baseline_bpb"] - merged["val_bpb"])
    group = QUALITY_KEYS + ["mixer", "mixer_name", "impl"]
    agg = {"val_bpb": "mean", "val_ppl": "mean", "val_loss": "mean", "baseline_bpb": "mean", "quality": "mean",
           "lr": "first", "train_tokens": "first", "tokens_per_s": "mean", "model_params": "first", "steps": "first"}
    agg = {k: v for k, v in agg.items() if k in merged}
    out = merged.groupby(group, as_index=False, dropna=False).agg(agg)
    spread = merged.groupby(group, dropna=False).agg(
        quality_min=("quality", "min"), quality_max=("quality", "max"), val_bpb_min=("val_bpb", "min"),
        val_bpb_max=("val_bpb", "max"), seeds=("quality", "count")).reset_index()
    out = out.merge(spread, on=group, how="left")
    out["baseline"] = baseline
    out["baseline_ppl"] = 2.0 ** out["baseline_bpb"]
    cols = QUALITY_KEYS + ["mixer", "mixer_name", "impl", "val_bpb", "val_bpb_min", "val_bpb_max", "val_ppl",
                           "val_loss", "baseline", "baseline_ppl", "quality", "quality_min", "quality_max", "seeds",
                           "lr", "steps", "train_tokens", "model_params", "tokens_per_s"]
    return out[[c for c in cols if c in out]].sort_values(["benchmark", "mode", "seq_len", "quality"],
                                                         ascending=[True, True, True, False])
