"""The report section of a ``scaling`` entry: exponents claimed vs measured, crossovers, decode state, the KV cache
per token (computed at run start: ``Scaling.run_figures``), tables per metric and mode, and the plots."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ..analysis import crossovers, scaling_fits, state_ratios
from ..report.markdown import heading, md, pivot
from ..report.plots import scaling_plot

if TYPE_CHECKING:
    from ..config import BenchmarkEntry
    from ..report.run import RunData

OPERATOR_SCOPE = ("Scope: **operator**. Each mixer's core operator alone (our fast form in "
                  "`architectures.ops.catalog`, column `op_impl` of the results) on (B, n, H, d_model/H) inputs, "
                  "without the layer's projections: the cost the guide's complexity cell describes. At n < d² a "
                  "layer's O(n d²) projections hide a super-linear attention pattern; compare with the layer "
                  "scope above.")
TABLES = [("time_s", "Median time (ms)"), ("peak_tensor_bytes", "Peak live tensor memory (MiB)"),
          ("cuda_peak_bytes", "CUDA allocator peak (MiB)"), ("flops", "FLOPs (GFLOP)"),
          ("peak_fraction", "Achieved FLOP/s (% of measured matmul peak)"), ("state_bytes", "Decode state (KiB)")]
PLOTS = [("time_s", ["forward", "train", "decode"], "time"),
         ("peak_tensor_bytes", ["forward", "train", "decode"], "memory"),
         ("state_bytes", ["decode"], "state")]


def all_fits(run: RunData) -> pd.DataFrame:
    """Exponent fits of every scaling entry of the run, each with its own ``fit`` params (computed once)."""
    def compute() -> pd.DataFrame:
        params = {e.label: run.params(e).fit.model_dump() for e in run.entries("scaling")}
        return scaling_fits(run.rows_of_kind("scaling"), run.specs, params)
    return run.cached("scaling_fits", compute)


def section(run: RunData, entry: BenchmarkEntry) -> list[str]:
    p = run.params(entry)
    rows = run.rows(entry.label)
    fits = all_fits(run)
    if not fits.empty:
        fits.to_csv(run.out / "fits.csv", index=False)
    fits = fits[fits["benchmark"] == entry.label] if not fits.empty else fits
    lines = heading(entry) + ([OPERATOR_SCOPE, ""] if p.scope == "operator" else [])
    lines += exponents(fits, p.fit.last_points, p.fit.tolerance)
    if p.crossover_against:  # an entry with `crossover_against: []` has no crossover section
        lines += crossover(rows, entry.label, p.crossover_against)
    lines += decode_state(rows) + kv_cache(run.figures.get(entry.label, {}).get("kv_cache_per_token"))
    for metric, title in TABLES:
        for mode in ("forward", "train", "decode"):
            table = pivot(rows, metric, mode)
            if not table.empty:
                lines += [f"### {title}: {mode}", "", md(table), ""]
    lines += ["### Plots", ""]
    for metric, modes, tag in PLOTS:
        path = run.plots / f"{entry.label}-{tag}.png"
        if scaling_plot(rows, fits, metric, modes, path, f"{entry.label}: {metric} vs n", run.specs):
            lines += [f"![{entry.label} {tag}](plots/{path.name})", ""]
    return lines


def exponents(fits: pd.DataFrame, last_points: int, tolerance: float) -> list[str]:
    lines = ["### Exponents: claimed vs measured", "",
             f"Least-squares slope of log(metric) on log(n) over the longest {last_points} "
             f"lengths; verdict `holds` when |measured - claimed| <= {tolerance}. Claims are the guide's "
             "complexity cells (see each mixer's spec); FLOPs are held to the time claim, and decode time per "
             "token is shown without a claim.", ""]
    if fits.empty:
        return lines
    table = fits[["mixer", "impl", "mode", "metric", "claimed_as_written", "claimed_exponent", "exponent",
                  "stderr", "r2", "n_range", "verdict"]].copy()
    table["exponent"] = [f"{e:.2f} ± {s:.2f}" if e is not None and not pd.isna(e) and not pd.isna(s)
                         else ("" if e is None or pd.isna(e) else f"{e:.2f}")
                         for e, s in zip(fits["exponent"], fits["stderr"])]
    table = table.drop(columns=["stderr"]).rename(columns={"exponent": "measured ± SE", "r2": "R²"})
    table = table.astype(object).where(table.notna(), "-")
    return lines + [md(table.sort_values(["metric", "mode", "mixer"]), floatfmt=".3f"), ""]


def crossover(rows: pd.DataFrame, label: str, against: list[str]) -> list[str]:
    cross = crossovers(rows, {label: against})
    lines = ["### Crossover lengths (forward time)", "",
             "The shortest measured n from which the mixer's median forward time stays below the "
             "baseline's at every longer measured n.", ""]
    if cross.empty:
        return lines + ["_(no forward times to compare)_", ""]
    return lines + [md(cross[["mixer", "against", "crossover", "speedup_at_longest", "longest_n"]],
                       floatfmt=".2f"), ""]


def decode_state(rows: pd.DataFrame) -> list[str]:
    ratios = state_ratios(rows) if not rows.empty else pd.DataFrame()
    if ratios.empty:
        return []
    longest = ratios["seq_len"].max()
    r = ratios[ratios["seq_len"] == longest][["mixer", "impl", "seq_len", "value", "ratio_to_standard"]]
    return ["### Decode state at the longest length", "",
            "Bytes of the state a mixer carries after n tokens (measured from the returned state, equal "
            "to its analytic `state_bytes`), and the ratio to `standard`'s KV cache.", "",
            md(r.rename(columns={"value": "state_bytes"}), floatfmt=".4g"), ""]


def kv_cache(records: list[dict] | None) -> list[str]:
    if not records:
        return []
    return ["### KV cache per token", "",
            "Decode cache per token (state_bytes(n) / n at the longest decode n) of the mixers whose cache "
            "grows with the context, at this run's size and at the published configurations in their specs "
            "(computed from `state_bytes` on the meta device when the run started), against `standard` with the "
            "same number of heads and head size.", "",
            md(pd.DataFrame(records), floatfmt=".6g"), ""]
