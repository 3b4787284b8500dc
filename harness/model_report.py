"""Report sections of the model kinds (``model_figures``, ``model_speed``, ``attention_memory``) and the verdicts of
the guide's model-level claims (``check: model_value`` in ``claims/guide.yaml``).

Sections follow the report contract: ``section(run, entry) -> markdown lines``, ``run.rows(label)`` the entry's
rows, ``run.out`` the run directory. Units are decimal: 1 GB = 10^9 bytes, 1 B params = 10^9.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CONTEXT_NAMES = {4096: "4K", 32768: "32K", 131072: "128K", 1048576: "1M"}


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False) if not df.empty else "_(no rows)_"


def count(x: Any) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    x = float(x)
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.4g}{unit}"
    return f"{x:.4g}"


def nbytes(x: Any) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    x = float(x)
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if abs(x) >= scale:
            return f"{x / scale:.4g} {unit}"
    return f"{x:.4g} B"


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if not df.empty and "status" in df else df


def _value(rows: pd.DataFrame, label: str, metric: str, **where: Any) -> float | None:
    r = rows[(rows["mixer"] == label) & (rows["metric"] == metric)] if not rows.empty else rows
    for key, want in where.items():
        if want is None:
            continue
        if key not in r:
            return None
        r = r[r[key] == want]
    return float(r["value"].iloc[0]) if not r.empty and pd.notna(r["value"].iloc[0]) else None


def _description(entry) -> list[str]:
    text = getattr(entry, "description", "") or ""
    return [text.strip(), ""] if text.strip() else []


# ---- model_figures -------------------------------------------------------------------------------------------------

def figures_table(rows: pd.DataFrame, contexts: list[int]) -> pd.DataFrame:
    out = []
    for label in dict.fromkeys(rows["mixer"]):
        mine = rows[rows["mixer"] == label]
        first = mine.iloc[0]
        v = lambda m, **w: _value(rows, label, m, **w)  # noqa: E731
        params, pub = v("params"), v("published_params")
        active, pub_a = v("active_params"), v("published_active_params")
        row = {"model": label, "family": first.get("family"), "kind": first.get("model_kind"),
               "params": count(params), "published": count(pub),
               "diff": f"{100 * (params - pub) / pub:+.2f}%" if params and pub else "-",
               "active": count(active), "published active": count(pub_a),
               "active diff": f"{100 * (active - pub_a) / pub_a:+.2f}%" if active and pub_a else "-",
               "FLOPs at n": count(v("flops_context")),
               "prefill FLOP/token": count(v("prefill_flops_per_token")),
               "decode FLOP/token": count(v("decode_flops_per_token")),
               "KV/state per token (bf16)": nbytes(v("state_bytes_per_token", cache_dtype="bf16"))}
        row.update({f"state @{CONTEXT_NAMES.get(n, n)} (bf16)": nbytes(v("state_bytes", context=n, cache_dtype="bf16"))
                    for n in contexts})
        row.update({"weights bf16": nbytes(v("weight_bytes", weight_dtype="bf16")),
                    "weights int4": nbytes(v("weight_bytes", weight_dtype="int4")),
                    "figures (s)": f"{v('figures_s'):.2f}" if v("figures_s") is not None else "-"})
        out.append(row)
    return pd.DataFrame(out)


def state_dtype_table(rows: pd.DataFrame, contexts: list[int]) -> pd.DataFrame:
    out = []
    for label in dict.fromkeys(rows[rows["metric"] == "state_bytes"]["mixer"]):
        for d in ("fp32", "bf16", "int8", "int4"):
            row = {"model": label, "cache dtype": d,
                   "per token": nbytes(_value(rows, label, "state_bytes_per_token", cache_dtype=d)),
                   "fixed": nbytes(_value(rows, label, "state_bytes_fixed", cache_dtype=d))}
            row.update({CONTEXT_NAMES.get(n, str(n)): nbytes(_value(rows, label, "state_bytes", context=n,
                                                                     cache_dtype=d)) for n in contexts})
            out.append(row)
    return pd.DataFrame(out)


def weights_table(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for label in dict.fromkeys(rows["mixer"]):
        out.append({"model": label, **{d: nbytes(_value(rows, label, "weight_bytes", weight_dtype=d))
                                       for d in ("fp32", "bf16", "int8", "int4")}})
    return pd.DataFrame(out)


def figures_section(run, entry) -> list[str]:
    rows = _ok(run.rows(entry.label))
    p = entry.params or {}
    contexts = list(p.get("contexts", [4096, 32768, 131072, 1048576]))
    context = p.get("context", 4096)
    lines = [f"## Benchmark `{entry.label}` (model_figures)", ""] + _description(entry)
    lines += [f"Every figure is read off the real module built on the meta device (`architectures.models.figures`): "
              f"parameters of the module, active parameters per token (MoE: routed top-k + shared experts + all "
              f"dense parameters, embeddings included), FLOPs per token counted by `FlopCounterMode` on the real "
              f"forward (prefill of {context} tokens / {context}; one decode step with {context} tokens of state; "
              f"matmuls and attention only, 2 FLOPs per multiply-add), decode state from each model's "
              f"`state_bytes` (KV cache, latent cache, recurrent state; batch 1), weights = params x bytes per "
              f"weight. Decimal units (1 GB = 10^9 B). Published figures are the presets' (sources in their files).",
              ""]
    if rows.empty:
        return lines + ["_(no rows)_", ""]
    lines += ["### Model table", "", _md(figures_table(rows, contexts)), ""]
    seconds = rows[rows["metric"] == "figures_s"]["value"]
    cpu = rows[rows["metric"] == "figures_cpu_s"]["value"]
    if not seconds.empty:
        lines += [f"Build + figures of all {len(seconds)} models and variants on the meta device (no weight memory): "
                  f"{seconds.sum():.1f} s wall clock in total (slowest {seconds.max():.1f} s), "
                  f"{cpu.sum():.1f} s of this process's CPU time (the wall clock includes waiting for a shared "
                  "CPU; see the environment's load).", ""]
    lines += ["### Decode state per cache dtype", "",
              "fp32 and bf16 from the module's formula at that dtype; int8 / int4 = fp32 x bits / 32 (values only, "
              "no quantisation scales). `fixed`: the part that does not grow with the context (recurrent states).",
              "", _md(state_dtype_table(rows, contexts)), "",
              "### Weight bytes per dtype", "", _md(weights_table(rows)), ""]
    lines += model_claims_section(run)
    return lines


# ---- model_speed ------------------------------------------------------------------------------------------------------

def _pivot(rows: pd.DataFrame, mode: str, metric: str, scale: float, fmt: str) -> pd.DataFrame:
    r = rows[(rows["mode"] == mode) & (rows["metric"] == metric)]
    if r.empty:
        return pd.DataFrame()
    t = r.pivot_table(index="mixer", columns="seq_len", values="value", aggfunc="first", sort=False)
    t = t.map(lambda x: "-" if pd.isna(x) else format(x * scale, fmt))
    t.columns = [f"n={c}" for c in t.columns]
    return t.reset_index().rename(columns={"mixer": "model"})


def speed_section(run, entry) -> list[str]:
    all_rows = run.rows(entry.label)
    rows = _ok(all_rows)
    lines = [f"## Benchmark `{entry.label}` (model_speed)", ""] + _description(entry)
    lines += ["The tiny flavour of each preset (same code as the full size), measured on this device. Medians of "
              "repeated calls; peak memory = live tensors created by one prefill call (`measure.LiveTensorBytes`).",
              ""]
    for mode, metric, scale, fmt, title in [
            ("prefill", "tokens_per_s", 1e-3, ".3g", "Prefill throughput (k tokens/s)"),
            ("prefill", "peak_tensor_bytes", 2**-20, ".3g", "Prefill peak live tensors (MiB)"),
            ("decode", "tokens_per_s", 1.0, ".4g", "Decode throughput (tokens/s, one step from a state of n tokens)"),
            ("decode", "state_bytes", 2**-10, ".4g", "Decode state (KiB, measured)")]:
        t = _pivot(rows, mode, metric, scale, fmt)
        if not t.empty:
            lines += [f"### {title}", "", _md(t), ""]
    ppl = rows[(rows["mode"] == "perplexity") & (rows["metric"].isin(["val_bpb", "val_ppl", "tokens_per_s",
                                                                       "model_params"]))] if not rows.empty else rows
    if not ppl.empty:
        t = ppl.pivot_table(index="mixer", columns="metric", values="value", aggfunc="first", sort=False)
        t = t.reset_index().rename(columns={"mixer": "model", "tokens_per_s": "train tokens/s"})
        first = ppl.iloc[0]
        lines += ["### Perplexity at one budget", "",
                  f"Next-byte training on {first.get('corpus')}, {int(first['steps'])} steps of "
                  f"{int(first['batch'])} x {int(first['seq_len'])} bytes, lr {first['lr']:g}; validation bits per "
                  "byte over the first validation bytes.", "", _md(t.round(4)), ""]
    failed = all_rows[all_rows["status"] != "ok"] if not all_rows.empty else all_rows
    if not failed.empty:
        f = failed.drop_duplicates("cell_id")[["mixer", "mode", "seq_len", "status", "error"]]
        lines += ["### Cells without measurements", "", _md(f), ""]
    return lines


# ---- attention_memory -----------------------------------------------------------------------------------------------

def attention_memory_section(run, entry) -> list[str]:
    rows = _ok(run.rows(entry.label))
    lines = [f"## Benchmark `{entry.label}` (attention_memory)", ""] + _description(entry)
    if rows.empty:
        return lines + ["_(no rows)_", ""]
    out = []
    for (mixer, n, d, h, b, dt), r in rows.groupby(["mixer", "seq_len", "d_model", "n_heads", "batch", "dtype"],
                                                    sort=True):
        v = {m: float(x) for m, x in zip(r["metric"], r["value"])}
        shape = r[r["metric"] == "largest_tensor_values"]["largest_shape"].iloc[0]
        out.append({"mixer": mixer, "n": n, "d_model": d, "heads": h, "batch": b, "dtype": dt,
                    "largest tensor": shape, "values per head": count(v.get("largest_tensor_values_per_head")),
                    "largest tensor bytes": nbytes(v.get("largest_tensor_bytes")),
                    "n^2 x d_model x 4 B": nbytes(n * n * d * 4),
                    "measured peak (real forward)": nbytes(v.get("peak_tensor_bytes"))})
    lines += ["The largest tensor one forward creates (meta device), the guide's n^2 x d_model x 4-byte figure "
              "beside it, and the measured peak of live tensors of a real forward where it fits.", "",
              _md(pd.DataFrame(out)), ""]
    return lines


# ---- the model-level claims ------------------------------------------------------------------------------------------

def _model_figure(run, benchmark: str, label: str, metric: str, c) -> float | None:
    rows = _ok(run.rows(benchmark))
    if rows.empty:
        return None
    where = {"context": c.context, "cache_dtype": c.cache_dtype}
    if benchmark == "attention_memory":
        where = {"seq_len": c.seq_len}
    return _value(rows, label, metric, **where)


def _beside(run, spec: dict) -> str:
    """A measured ratio at the longest seq_len both models ran (shown beside a verdict, not judged)."""
    rows = _ok(run.rows(spec.get("benchmark", "model_speed")))
    if rows.empty:
        return "; measured tiny ratio: not run"
    r = rows[(rows["metric"] == spec["metric"]) & (rows["mode"] == spec.get("mode", "decode"))]
    a, b = r[r["mixer"] == spec["model"]], r[r["mixer"] == spec["against"]]
    common = sorted(set(a["seq_len"]) & set(b["seq_len"]))
    if not common:
        return "; measured tiny ratio: no common length"
    n = common[-1]
    va, vb = float(a[a["seq_len"] == n]["value"].iloc[0]), float(b[b["seq_len"] == n]["value"].iloc[0])
    ratio = va / vb if spec.get("ratio", "model/against") == "model/against" else vb / va
    return f"; measured tiny {spec['metric']} ratio {ratio:.2f}x at n={n} ({spec['model']} vs {spec['against']})"


def model_value_claim(run, c) -> dict[str, Any]:
    """Verdict of a ``model_value`` claim (harness.claims.Claim) against a run's model rows."""
    from .claims import FAILS, HOLDS, NOT_MEASURABLE, Figure, _claim_row

    where = ", ".join(f"{k}={getattr(c, k)}" for k in ("context", "cache_dtype", "seq_len") if getattr(c, k))
    held = f"{c.metric} of {c.model}" + (f" {c.ratio.replace('model', c.model).replace('against', c.against)}"
                                         if c.against else "") + (f" ({where})" if where else "")
    tol = f"within ± {c.relative_tolerance:.1%} of {c.expected:g}"
    value = _model_figure(run, c.benchmark, c.model, c.metric, c)
    if value is None:
        reason = f"no `{c.benchmark}` figure {c.metric} for {c.model} in this run"
        return _claim_row(c.id, c.method, c.text, held, tol, Figure(None, "-", reason=reason), NOT_MEASURABLE,
                          c.source)
    text = count(value) if "bytes" not in c.metric else nbytes(value)
    if c.against:
        other = _model_figure(run, c.benchmark, c.against, c.metric, c)
        if other is None or other == 0 or value == 0:
            reason = f"no `{c.benchmark}` figure {c.metric} for {c.against} in this run"
            return _claim_row(c.id, c.method, c.text, held, tol, Figure(None, "-", reason=reason), NOT_MEASURABLE,
                              c.source)
        show = count if "bytes" not in c.metric else nbytes
        text = f"{show(value)} vs {show(other)}"
        value = value / other if c.ratio == "model/against" else other / value
        text = f"{value:.3g} ({text})"
    ok = abs(value - c.expected) <= c.relative_tolerance * abs(c.expected)
    if c.beside:
        text += _beside(run, c.beside)
    return _claim_row(c.id, c.method, c.text, held, tol, Figure(value, text), HOLDS if ok else FAILS, c.source)


def model_claims_section(run) -> list[str]:
    """The verdicts of the claims file's model_value claims (the file is copied into the run directory first)."""
    from .claims import load_claims, resolve_claims_path

    out = run.out
    copy = Path(out) / "claims.yaml"
    if not copy.exists():
        shutil.copyfile(resolve_claims_path(None), copy)
    cf = load_claims(copy)
    rows = [model_value_claim(run, c) for c in cf.claims if c.check == "model_value"]
    if not rows:
        return []
    table = pd.DataFrame(rows)
    table.to_csv(Path(out) / "model_claims.csv", index=False)
    return ["### The guide's model-level claims", "",
            "Each claim as the guide writes it, the figure of this run it is held to (model, context, cache dtype "
            "named), the tolerance and the verdict (`claims.yaml`, a copy of `claims/guide.yaml`; also in "
            "`model_claims.csv`).", "", _md(table.drop(columns=["source"])), ""]
