"""The guide's claims as data (``claims/guide.yaml``) and their verdicts against a run's measured figures.

``load_claims(path)`` validates the file. ``evaluate(run)`` reads a run directory's rows (``RunData``) and returns

- ``methods``: the Master Comparison Table, one row per method, the guide's cells beside the measured figures
  (fitted exponents of forward time, FLOPs, prefill memory and decode state; quality; MQAR accuracy; tokens/s at
  the longest length) and the verdicts of the time, memory and quality cells;
- ``claims``: one row per claim (the table's cells and the text's claims) with the figure it is held to, the
  comparison, the tolerance and the verdict.

Figures come from the benchmarks of the run by kind: ``scaling`` (exponents via ``analysis.scaling_fits``, speed-ups,
tokens/s), ``perplexity`` (``val_ppl``; quality = 100 x ppl(standard) / ppl(method) in the same benchmark entry, so a
bidirectional method is compared with a bidirectional standard; per training seed at the best lr, then the mean and
the min-max spread over the seeds, with the budget), ``mqar`` (``accuracy`` of the best lr, mean over seeds),
``equivalence`` (``max_rel_diff``). A verdict is ``holds``, ``does not hold``, ``inconclusive at this budget`` (a
quality figure whose spread over seeds straddles the tolerance edge: ``analysis.interval_verdict``) or ``not
measurable here`` (with why).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .analysis import (INCONCLUSIVE, interval_verdict, ok_metric, quality_table, scaling_fits, verdict,
                       with_train_seed)
from .env import REPO_ROOT, data_dir

if TYPE_CHECKING:
    from .report.run import RunData

DEFAULT_CLAIMS = data_dir("claims") / "guide.yaml"
HOLDS, FAILS, NOT_MEASURABLE = "holds", "does not hold", "not measurable here"
# INCONCLUSIVE ("inconclusive at this budget"): a figure with a spread over seeds that straddles the tolerance edge


# ---- the file ---------------------------------------------------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tolerances(_Model):
    exponent: float = Field(default=0.25, gt=0)
    quality_points: float = Field(default=3.0, ge=0)
    quality_at_least_points: float = Field(default=1.0, ge=0)


class ComplexityCell(_Model):
    as_written: str
    exponent: float


class MemoryCell(ComplexityCell):
    measured_as: Literal["prefill", "decode_state"] = "prefill"


class QualityCell(_Model):
    as_written: str
    percent: float
    kind: Literal["approx", "at_least", "reference"]
    tolerance: float | None = Field(default=None, ge=0)  # None: the file's quality tolerance for the kind


class MethodRow(_Model):
    method: str  # registry name
    name: str  # as the guide writes it
    attention: Literal["causal", "bidirectional"] = "causal"
    time: ComplexityCell
    memory: MemoryCell
    quality: QualityCell
    best_for: str = ""


CHECK_FIELDS = {  # check -> fields it needs
    "exponent": ("metric", "mode", "exponent"),
    "same_outputs": ("metric", "against", "tolerance_by_dtype"),
    "speedup": ("metric", "mode", "against", "range", "relative_tolerance"),
    "below": ("metric", "against", "margin"),
    "ordering": ("metric", "methods", "margin"),
    "model_value": ("metric", "model", "expected", "relative_tolerance"),
    "figure": ("metric", "range", "relative_tolerance"),
    "compare": ("metric", "where", "against_where", "margin"),
}


class Claim(_Model):
    id: str
    method: str
    text: str
    source: str = ""
    check: Literal["exponent", "same_outputs", "speedup", "below", "ordering", "model_value", "figure", "compare"]
    benchmark: str  # the benchmark kind whose rows hold the figure
    metric: str | None = None
    mode: str | None = None
    exponent: float | None = None
    against: str | None = None
    tolerance_by_dtype: dict[str, float] | None = None
    range: tuple[float, float | None] | None = None  # [lo, hi]; figure: hi null = no upper bound
    relative_tolerance: float | None = Field(default=None, ge=0)
    margin: float | None = None
    reference_min: float | None = None  # below: the reference must reach this, or the task was not learnt at all
    methods: list[str] | None = None
    # model_value (whole-model figures, see model_value_claim): the figure of `model` (a cell label of the
    # `benchmark` kind: model_figures or attention_memory), optionally divided by / into that of `against`
    model: str | None = None
    expected: float | None = None  # the claimed figure (or ratio), held within relative_tolerance
    context: int | None = None  # model_figures rows at this context (state bytes, decode bytes)
    cache_dtype: str | None = None  # ... at this cache dtype (fp32, bf16, int8, int4)
    seq_len: int | None = None  # attention_memory rows at this length
    ratio: Literal["model/against", "against/model"] = "model/against"
    beside: dict[str, Any] | None = None  # a measured figure shown beside (not judged): benchmark, metric, mode,
    #                                       model, against, ratio - at the longest seq_len both ran
    # figure / compare: the rows of the benchmark kind whose columns equal these values (e.g. {variant: int4})
    where: dict[str, Any] | None = None
    against_where: dict[str, Any] | None = None  # compare: the rows the figure is compared with (lower is better)
    select: Literal["longest", "max", "min"] = "longest"  # several rows match: the longest seq_len, or max / min
    devices: list[str] | None = None  # device types on which the figure can judge the claim (None: every device)
    device_reason: str = ""  # why the claim cannot be judged on other devices

    @model_validator(mode="after")
    def _has_what_its_check_needs(self):
        missing = [f for f in CHECK_FIELDS[self.check] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"claim {self.id!r} ({self.check}) needs {missing}")
        return self


class ClaimsFile(_Model):
    tolerances: Tolerances = Field(default_factory=Tolerances)
    methods: list[MethodRow]
    claims: list[Claim] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self):
        names = [m.method for m in self.methods]
        ids = [c.id for c in self.claims]
        for what, items in (("method", names), ("claim id", ids)):
            dupes = sorted({x for x in items if items.count(x) > 1})
            if dupes:
                raise ValueError(f"repeated {what}(s): {dupes}")
        return self

    def method(self, name: str) -> MethodRow | None:
        return next((m for m in self.methods if m.method == name), None)


def resolve_claims_path(path: str | Path | None) -> Path:
    """A claims file named in a suite: absolute, or relative to the repository root."""
    if not path:
        return DEFAULT_CLAIMS
    path = Path(path)
    if path.is_absolute():
        return path
    if path.parts[0] == "claims":  # the shipped claims directory (a source checkout's, or the package data)
        return data_dir("claims").joinpath(*path.parts[1:])
    return REPO_ROOT / path


def table_cells(raw: dict, specs: dict[str, dict]) -> dict:
    """The claims file with each method's Master Comparison Table cells filled in from its mixer's spec
    (``MixerSpec``, the one source of the guide's cells; ``specs``: name -> ``MixerSpec.as_dict()``): time and
    memory as written and as exponents (memory: the prefill exponent, or the decode-state exponent where
    ``measured_as: decode_state``), quality as written with its percent and kind ("~X%": approx, "X%+":
    at_least). What the file states is kept: its methods carry only what the spec cannot say (the guide's name,
    ``measured_as``, a quality ``kind: reference`` or ``tolerance``), a run's ``claims.yaml`` carries every cell."""
    out = copy.deepcopy(raw)
    for row in out.get("methods") or []:
        spec = specs.get(row.get("method"))
        if spec is None:
            continue  # validation then names what is missing
        time, memory, quality = (row.setdefault(k, {}) for k in ("time", "memory", "quality"))
        time.setdefault("as_written", spec["claimed_time"])
        time.setdefault("exponent", spec["time_exponent"])
        memory.setdefault("as_written", spec["claimed_memory"])
        decode = memory.get("measured_as") == "decode_state"
        memory.setdefault("exponent", spec["state_exponent"] if decode else spec["memory_exponent"])
        text = spec.get("claimed_quality")
        quality.setdefault("as_written", text)
        if text:
            quality.setdefault("percent", float(text.strip("~%+ ")))
            quality.setdefault("kind", "at_least" if text.rstrip().endswith("+") else "approx")
    return out


def registry_specs(names) -> dict[str, dict]:
    import architectures

    return {n: architectures.get_mixer(n).spec.as_dict() for n in names if n in architectures.list_mixers()}


def load_claims(path: str | Path | None = None, specs: dict[str, dict] | None = None) -> ClaimsFile:
    """A claims file, validated, with the table's cells from ``specs`` (default: the registered mixers' specs)."""
    path = resolve_claims_path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    if specs is None:
        specs = registry_specs([m.get("method") for m in raw.get("methods") or []])
    return ClaimsFile.model_validate(table_cells(raw, specs))


def dump_claims(cf: ClaimsFile, path: Path) -> None:
    """Write a claims file with every cell stated (what a run keeps: its report needs no registry)."""
    path.write_text(yaml.safe_dump(cf.model_dump(mode="json", exclude_none=True), sort_keys=False, width=120))


# ---- the run's figures --------------------------------------------------------------------------------------------

def scaling_labels(run: RunData, attention: str) -> list[str]:
    """Labels of the scaling entries that measure with causal or bidirectional attention."""
    return [e.label for e in run.entries("scaling") if run.params(e).attention == attention]


def why_missing(run: RunData, kind: str, method: str) -> str:
    """Why a method has no usable figure from the benchmarks of a kind."""
    if not run.entries(kind):
        return f"no `{kind}` benchmark in this run"
    rows = run.rows_of_kind(kind)
    mine = rows[rows["mixer"] == method] if not rows.empty else rows
    if mine.empty:
        return f"{method} not run by the `{kind}` benchmark"
    if (mine["status"] == "missing").all():
        return f"{method} is not registered in this build"
    failed = mine[mine["status"] != "ok"]
    if len(failed) == len(mine):
        first = failed.iloc[0]
        return f"{method}'s `{kind}` cells: {first['status']} ({first.get('error') or ''})".strip()
    return f"{method}: no usable `{kind}` figure"


def claim_fits(run: RunData, tolerance: float) -> pd.DataFrame:
    """Exponent fits of every scaling entry with each entry's ``fit.last_points`` and the claims file's tolerance."""
    def compute() -> pd.DataFrame:
        params = {e.label: {"last_points": run.params(e).fit.last_points, "tolerance": tolerance}
                  for e in run.entries("scaling")}
        return scaling_fits(run.rows_of_kind("scaling"), run.specs, params) if params else pd.DataFrame()
    return run.cached(("claim_fits", tolerance), compute)


def _fmt(x: float | None, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return format(float(format(x, spec)) + 0.0, spec)  # no "-0.00"


@dataclass
class Figure:
    """A measured figure (or why there is none) and the text that shows it."""
    value: float | None
    text: str
    detail: dict = field(default_factory=dict)
    reason: str = ""


def fitted_exponent(run: RunData, method: str, metric: str, mode: str, tolerance: float,
                    attention: str = "causal") -> Figure:
    """The fitted exponent of a method's metric in the scaling entries of its attention (causal or bidirectional).
    Where several entries measure it, the fit over the widest range of n (largest n_max / n_min, then the longest n)
    is the one held to the claim: the least noisy and the most asymptotic."""
    fits = claim_fits(run, tolerance)
    if not fits.empty:
        f = fits[(fits["mixer"] == method) & (fits["metric"] == metric) & (fits["mode"] == mode)
                 & fits["benchmark"].isin(scaling_labels(run, attention))]
        f = f[f["exponent"].notna()]
        if not f.empty:
            span = np.log(f["n_max"].astype(float) / f["n_min"].astype(float))
            r = f.assign(span=span).sort_values(["span", "n_max"], ascending=False, kind="stable").iloc[0]
            se = "" if pd.isna(r["stderr"]) else f" ± {r['stderr']:.2f}"
            shown = round(float(r["exponent"]), 2) + 0.0  # no "-0.00"
            return Figure(float(r["exponent"]), f"{shown:.2f}{se} (n {r['n_range']})",
                          {"benchmark": r["benchmark"], "r2": r["r2"], "n_range": r["n_range"]})
    reason = why_missing(run, "scaling", method)
    rows = run.rows_of_kind("scaling")
    if not rows.empty and "not registered" not in reason:
        mine = rows[(rows["mixer"] == method) & rows["benchmark"].isin(scaling_labels(run, attention))]
        mine = mine[mine["mode"] == mode]
        failed = mine[mine["status"] != "ok"]
        if mine.empty:
            reason = f"{method} not run in {mode} mode by a {attention} `scaling` entry"
        elif not ok_metric(mine, metric).empty:
            reason = f"fewer than 2 lengths of {metric} ({mode}) to fit"
        elif not failed.empty:
            reason = f"{method}'s {mode} cells: {failed.iloc[0]['status']} ({failed.iloc[0].get('error') or ''})"
        else:
            reason = f"no {metric} measured ({mode})"
    return Figure(None, "-", reason=reason)


def tokens_per_s_at_longest(run: RunData, method: str, attention: str = "causal") -> Figure:
    rows = ok_metric(run.rows_of_kind("scaling"), "tokens_per_s")
    if not rows.empty:
        rows = rows[rows["benchmark"].isin(scaling_labels(run, attention))]
    rows = rows[(rows["mixer"] == method) & (rows["mode"] == "forward")] if not rows.empty else rows
    if rows.empty:
        return Figure(None, "-", reason=why_missing(run, "scaling", method))
    r = rows.sort_values("seq_len").iloc[-1]
    return Figure(float(r["value"]), f"{r['value'] / 1e3:.4g}k (n={int(r['seq_len'])})", {"seq_len": int(r["seq_len"])})


def _best_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of the best learning rate when the benchmark marks one (``best``), else all rows."""
    if "best" in rows and rows["best"].notna().any():
        return rows[rows["best"] == True]  # noqa: E712 - a column of True/False/None
    return rows


def budget_text(steps: float | None, tokens: float | None, params: float | None) -> str:
    """The training budget behind a quality figure: steps, tokens seen and model parameters."""
    parts = []
    if steps is not None and not pd.isna(steps):
        parts.append(f"{int(steps)} steps")
    if tokens is not None and not pd.isna(tokens):
        parts.append(f"{tokens / 1e6:.3g}M tok")
    if params is not None and not pd.isna(params):
        parts.append(f"{params / 1e6:.3g}M params")
    return ", ".join(parts) if parts else "budget not recorded"


def perplexity_quality(run: RunData, method: str) -> Figure:
    """quality = 100 x ppl(standard) / ppl(method), per-byte validation perplexities of the best learning rate,
    against the standard cell of the same perplexity entry, objective (``mode``: causal_lm, or masked_lm for a
    bidirectional-only method) and shape: ``analysis.quality_table``, per training seed and summarised over the
    seeds. The figure's value is the mean; ``detail`` holds the spread (``lo``, ``hi``: min and max over seeds),
    ``seeds`` and the budget; its text shows all of them."""
    table = quality_table(run.rows_of_kind("perplexity"))
    if not table.empty:
        mine = table[table["mixer"] == method]
        rated = mine[mine["quality"].notna()]
        if not mine.empty and rated.empty:
            return Figure(None, "-", reason=f"no standard perplexity with {method}'s objective and shape")
        if not rated.empty:
            r = rated.sort_values("seq_len", kind="stable").iloc[-1]  # the longest context if several
            q, lo, hi, n = float(r["quality"]), float(r["quality_min"]), float(r["quality_max"]), int(r["seeds"])
            spread = f"{lo:.1f}-{hi:.1f} over {n} seeds" if n > 1 else "1 seed: spread unknown"
            budget = budget_text(r.get("steps"), r.get("train_tokens"), r.get("model_params"))
            ppl, ref_ppl = float(r["val_ppl"]), float(r["baseline_ppl"])
            lr = f"lr {r['lr']:g}; " if pd.notna(r.get("lr")) else ""
            return Figure(q, f"{q:.1f}% ({spread}; ppl {ppl:.3g} vs {ref_ppl:.3g}, {r['mode']}; {lr}{budget})",
                          {"benchmark": r["benchmark"], "ppl": ppl, "ref_ppl": ref_ppl, "lo": lo, "hi": hi,
                           "seeds": n, "budget": budget})
    return Figure(None, "-", reason=why_missing(run, "perplexity", method))


MQAR_KEYS = ["seq_len", "n_pairs", "d_model"]


def mqar_accuracies(run: RunData, method: str) -> pd.DataFrame:
    """Best-lr accuracy of a method per (seq_len, n_pairs, d_model): ``value`` the mean over its training seeds,
    ``lo`` / ``hi`` their min / max."""
    rows = _best_rows(ok_metric(run.rows_of_kind("mqar"), "accuracy"))
    if rows.empty:
        return rows
    rows = with_train_seed(rows[rows["mixer"] == method])
    keys = [k for k in MQAR_KEYS if k in rows]
    # a cell measured again (a resumed run) counts once, its latest figure; then the mean over the training seeds
    rows = rows.drop_duplicates(subset=keys + ["train_seed"], keep="last")
    return rows.groupby(keys, as_index=False).agg(value=("value", "mean"), lo=("value", "min"), hi=("value", "max"))


def mqar_accuracy(run: RunData, method: str) -> Figure:
    acc = mqar_accuracies(run, method)
    if acc.empty:
        return Figure(None, "-", reason=why_missing(run, "mqar", method))
    mean = float(acc["value"].mean())
    text = f"{mean:.3f}" if len(acc) == 1 else f"{mean:.3f} (mean of {len(acc)}; {acc['value'].min():.2f}-" \
                                                f"{acc['value'].max():.2f})"
    return Figure(mean, text, {"configs": len(acc)})


# ---- verdicts -----------------------------------------------------------------------------------------------------

def _claim_row(cid: str, method: str, text: str, held_to: str, tolerance: str, fig: Figure, verdict_: str,
               source: str = "") -> dict[str, Any]:
    return {"id": cid, "method": method, "claim": text, "source": source, "held to": held_to,
            "tolerance": tolerance, "measured": fig.text, "verdict": verdict_,
            "why": fig.reason if verdict_ == NOT_MEASURABLE else ""}


def _exp_verdict(fig: Figure, claimed: float, tol: float) -> str:
    return verdict(fig.value, claimed, tol) if fig.value is not None else NOT_MEASURABLE


def quality_verdict(q: QualityCell, fig: Figure, tol: Tolerances) -> tuple[str, str, Figure]:
    """(verdict, tolerance text, figure) of a quality cell. The figure's spread over seeds (``detail`` lo, hi) is
    held to the tolerance as a whole (``analysis.interval_verdict``): ``holds`` / ``does not hold`` only when it lies
    entirely inside / outside, ``inconclusive at this budget`` when it straddles the edge."""
    if q.kind == "reference":
        ref = Figure(None, "100% (reference)", reason="the reference of quality: 100% by definition")
        return NOT_MEASURABLE, "-", ref
    if q.kind == "approx":
        t = q.tolerance if q.tolerance is not None else tol.quality_points
        text, band = f"abs(q - {q.percent:g}) <= {t:g} points", (q.percent - t, q.percent + t)
    else:
        t = q.tolerance if q.tolerance is not None else tol.quality_at_least_points
        text, band = f"q >= {q.percent:g} - {t:g} points", (q.percent - t, float("inf"))
    if fig.value is None:
        return NOT_MEASURABLE, text, fig
    lo, hi = fig.detail.get("lo", fig.value), fig.detail.get("hi", fig.value)
    return interval_verdict(lo, hi, *band), text + " (over the spread of seeds)", fig


def check_claim(run: RunData, c: Claim, cf: ClaimsFile) -> dict[str, Any]:
    tol = cf.tolerances
    if c.check == "exponent":
        fig = fitted_exponent(run, c.method, c.metric, c.mode, tol.exponent)
        return _claim_row(c.id, c.method, c.text, f"exponent of {c.metric} ({c.mode}) = {c.exponent:g}",
                          f"± {tol.exponent:g}", fig, _exp_verdict(fig, c.exponent, tol.exponent), c.source)
    if c.check == "same_outputs":
        rows = ok_metric(run.rows_of_kind(c.benchmark), c.metric)
        rows = rows[(rows["mixer"] == c.method) & (rows["mode"] == "forward")] if not rows.empty else rows
        held = f"largest {c.metric} against {c.against} (forward) over the measured lengths"
        if rows.empty:
            fig = Figure(None, "-", reason=why_missing(run, c.benchmark, c.method))
            return _claim_row(c.id, c.method, c.text, held, "-", fig, NOT_MEASURABLE, c.source)
        dtype = str(rows.iloc[0]["dtype"])
        t = c.tolerance_by_dtype.get(dtype)
        worst = float(rows["value"].max())
        fig = Figure(worst, f"{worst:.2e} ({dtype}, n {int(rows['seq_len'].min())}-{int(rows['seq_len'].max())})")
        if t is None:
            fig.reason = f"no tolerance for {dtype} in the claims file"
            return _claim_row(c.id, c.method, c.text, held, "-", fig, NOT_MEASURABLE, c.source)
        return _claim_row(c.id, c.method, c.text, held, f"<= {t:g} ({dtype})", fig,
                          HOLDS if worst <= t else FAILS, c.source)
    if c.check == "speedup":
        return _speedup(run, c)
    if c.check == "below":
        return _below(run, c)
    if c.check == "model_value":  # evaluate() leaves them to the model_figures section (harness.model_report)
        raise ValueError(f"claim {c.id}: model_value claims are judged by harness.model_report.model_value_claim")
    if c.check in ("figure", "compare"):
        return _figure_claim(run, c)
    return _ordering(run, c)


def _where_text(where: dict | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (where or {}).items())


def selected_figure(run: RunData, c: Claim, where: dict | None) -> Figure:
    """The figure of a ``figure`` / ``compare`` claim: ``c.metric`` in the rows of ``c.benchmark`` matching
    ``where``, one value chosen by ``c.select`` (the longest seq_len, or the max / min)."""
    rows = ok_metric(run.rows_of_kind(c.benchmark), c.metric)
    for key, value in (where or {}).items():
        rows = rows[rows[key] == value] if not rows.empty and key in rows else rows.iloc[0:0]
    if rows.empty:
        why = why_missing(run, c.benchmark, c.method) if not run.entries(c.benchmark) else \
            f"no ok `{c.metric}` row with {_where_text(where) or 'any values'} in `{c.benchmark}`"
        return Figure(None, "-", reason=why)
    if c.select == "longest":
        row = rows.sort_values("seq_len").iloc[-1]
    else:
        row = rows.loc[rows["value"].astype(float).idxmax() if c.select == "max" else rows["value"].astype(float).idxmin()]
    v = float(row["value"])
    return Figure(v, f"{v:.4g} ({_where_text(where) + ', ' if where else ''}n={int(row['seq_len'])})")


def _figure_claim(run: RunData, c: Claim) -> dict[str, Any]:
    device = str(run.df["device"].iloc[0]).split(":")[0] if not run.df.empty and "device" in run.df else ""
    if c.check == "figure":
        lo, hi = c.range
        rt = c.relative_tolerance
        held = f"{c.metric} ({c.benchmark}{', ' + _where_text(c.where) if c.where else ''}, {c.select})"
        tol_text = (f"within [{lo * (1 - rt):.4g}, {hi * (1 + rt):.4g}]" if hi is not None
                    else f">= {lo * (1 - rt):.4g}") + f" ({lo:g}{'-' + format(hi, 'g') if hi is not None else '+'}"
        tol_text += f" ± {rt:.0%})"
        fig = selected_figure(run, c, c.where)
        ok = fig.value is not None and lo * (1 - rt) <= fig.value and (hi is None or fig.value <= hi * (1 + rt))
        if fig.value is not None and hi is not None and fig.value > hi * (1 + rt):
            fig.text += "; above the claimed range"
    else:
        held = f"{c.metric} ({c.benchmark}): {_where_text(c.where)} below {_where_text(c.against_where)}"
        tol_text = f"lower by > {c.margin:g}"
        mine, ref = selected_figure(run, c, c.where), selected_figure(run, c, c.against_where)
        fig = Figure(None if mine.value is None or ref.value is None else ref.value - mine.value,
                     f"{mine.text} vs {ref.text}", reason=mine.reason or ref.reason)
        ok = fig.value is not None and fig.value > c.margin
    if c.devices is not None and device not in c.devices:
        fig.reason = f"measured on {device or 'no device'}; {c.device_reason or 'judged only on ' + str(c.devices)}"
        return _claim_row(c.id, c.method, c.text, held, tol_text, fig, NOT_MEASURABLE, c.source)
    if fig.value is None:
        return _claim_row(c.id, c.method, c.text, held, tol_text, fig, NOT_MEASURABLE, c.source)
    return _claim_row(c.id, c.method, c.text, held, tol_text, fig, HOLDS if ok else FAILS, c.source)


def _speedup(run: RunData, c: Claim) -> dict[str, Any]:
    lo, hi = c.range
    rt = c.relative_tolerance
    held = f"t_{c.against} / t_{c.method}, {c.metric} ({c.mode}) at the longest common length"
    tol_text = f"within [{lo * (1 - rt):.3g}, {hi * (1 + rt):.3g}] ({lo:g}-{hi:g}x ± {rt:.0%})"
    times = ok_metric(run.rows_of_kind(c.benchmark), c.metric)
    if not times.empty:
        times = times[(times["mode"] == c.mode) & times["benchmark"].isin(scaling_labels(run, "causal"))]
    keys = ["benchmark", "seq_len", "batch", "d_model", "n_heads", "dtype"]
    mine = times[times["mixer"] == c.method] if not times.empty else times
    base = times[times["mixer"] == c.against] if not times.empty else times
    merged = mine[keys + ["value"]].merge(base[keys + ["value"]], on=keys, suffixes=("", "_ref")) \
        if not mine.empty and not base.empty else pd.DataFrame()
    if merged.empty:
        reason = why_missing(run, c.benchmark, c.method) if mine.empty else why_missing(run, c.benchmark, c.against)
        return _claim_row(c.id, c.method, c.text, held, tol_text, Figure(None, "-", reason=reason), NOT_MEASURABLE,
                          c.source)
    # One entry's lengths (never pooled across entries): the causal entry whose common lengths reach the longest n,
    # the first in the suite on a tie.
    order = {label: i for i, label in enumerate(scaling_labels(run, "causal"))}
    reach = merged.groupby("benchmark")["seq_len"].max()
    entry = min(reach.index, key=lambda b: (-reach[b], order.get(b, len(order))))
    merged = merged[merged["benchmark"] == entry].sort_values("seq_len")
    merged["speedup"] = merged["value_ref"] / merged["value"]
    last = merged.iloc[-1]
    s = float(last["speedup"])
    others = ", ".join(f"{int(r.seq_len)}: {r.speedup:.2f}x" for r in merged.iloc[-4:-1].itertuples())
    fig = Figure(s, f"{s:.2f}x at n={int(last['seq_len'])}" + (f" (n={others})" if others else "")
                 + (f" in `{entry}`" if len(reach) > 1 else ""))
    ok = lo * (1 - rt) <= s <= hi * (1 + rt)
    if not ok and s > hi * (1 + rt):
        fig.text += "; faster than claimed"
    return _claim_row(c.id, c.method, c.text, held, tol_text, fig, HOLDS if ok else FAILS, c.source)


def _below(run: RunData, c: Claim) -> dict[str, Any]:
    held = f"mean {c.metric} ({c.benchmark}, best lr) over configurations run by both, vs {c.against}"
    tol_text = f"{c.against} - {c.method} > {c.margin:g}"
    mine, ref = mqar_accuracies(run, c.method), mqar_accuracies(run, c.against)
    if mine.empty or ref.empty:
        reason = why_missing(run, c.benchmark, c.method if mine.empty else c.against)
        return _claim_row(c.id, c.method, c.text, held, tol_text, Figure(None, "-", reason=reason), NOT_MEASURABLE,
                          c.source)
    keys = [k for k in MQAR_KEYS if k in mine and k in ref]
    merged = mine.merge(ref, on=keys, suffixes=("", "_ref"))
    if merged.empty:
        fig = Figure(None, "-", reason=f"{c.method} and {c.against} share no configuration")
        return _claim_row(c.id, c.method, c.text, held, tol_text, fig, NOT_MEASURABLE, c.source)
    a, b = float(merged["value"].mean()), float(merged["value_ref"].mean())
    fig = Figure(b - a, f"{c.method} {a:.3f} vs {c.against} {b:.3f} (difference {b - a:+.3f}, {len(merged)} configs)")
    if c.reference_min is not None:
        tol_text += f"; {c.against} >= {c.reference_min:g}"
        if b < c.reference_min:  # the baseline itself did not learn the task: a gap would say nothing about recall
            fig.reason = f"{c.against} reached {b:.3f} < {c.reference_min:g}: the task was not learnt within the budget"
            return _claim_row(c.id, c.method, c.text, held, tol_text, fig, NOT_MEASURABLE, c.source)
    # over the spread of seeds: the gap is known up to [mean lo_ref - mean hi, mean hi_ref - mean lo]
    lo = float(merged["lo_ref"].mean() - merged["hi"].mean())
    hi = float(merged["hi_ref"].mean() - merged["lo"].mean())
    verdict_ = interval_verdict(lo, hi, c.margin) if lo != hi else (HOLDS if b - a > c.margin else FAILS)
    return _claim_row(c.id, c.method, c.text, held, tol_text, fig, verdict_, c.source)


def _ordering(run: RunData, c: Claim) -> dict[str, Any]:
    held = f"{c.metric} " + " > ".join(c.methods)
    tol_text = f"each above the next by > {c.margin:g} (over the spread of seeds)"
    figs = {m: perplexity_quality(run, m) for m in c.methods}
    missing = [m for m, f in figs.items() if f.value is None]
    text = ", ".join(f"{m} {f.value:.1f}%" if f.value is not None else f"{m} -" for m, f in figs.items())
    if missing:
        fig = Figure(None, text, reason="; ".join(figs[m].reason for m in missing))
        return _claim_row(c.id, c.method, c.text, held, tol_text, fig, NOT_MEASURABLE, c.source)
    verdicts = []
    for x, y in zip(c.methods, c.methods[1:]):  # the gap x - y is known up to [lo_x - hi_y, hi_x - lo_y]
        fx, fy = figs[x], figs[y]
        lo = fx.detail.get("lo", fx.value) - fy.detail.get("hi", fy.value)
        hi = fx.detail.get("hi", fx.value) - fy.detail.get("lo", fy.value)
        verdicts.append(interval_verdict(lo, hi, c.margin, float("inf")) if lo != hi
                        else (HOLDS if lo > c.margin else FAILS))
    verdict_ = FAILS if FAILS in verdicts else (INCONCLUSIVE if INCONCLUSIVE in verdicts else HOLDS)
    return _claim_row(c.id, c.method, c.text, held, tol_text, Figure(figs[c.methods[0]].value, text), verdict_,
                      c.source)


def evaluate(run: RunData, cf: ClaimsFile, only: list[str] | None = None,
             methods_table: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(methods table, claims table) for a run. See the module docstring. ``only``: the claim ids (globs) to check
    (None: all); ``methods_table=False`` leaves out the Master Comparison Table and its cells' claims."""
    import fnmatch

    tol = cf.tolerances
    methods, claims = [], []
    for m in (cf.methods if methods_table else []):
        t = fitted_exponent(run, m.method, "time_s", "forward", tol.exponent, m.attention)
        flops = fitted_exponent(run, m.method, "flops", "forward", tol.exponent, m.attention)
        prefill = fitted_exponent(run, m.method, "peak_tensor_bytes", "forward", tol.exponent, m.attention)
        state = fitted_exponent(run, m.method, "state_bytes", "decode", tol.exponent, m.attention)
        mem = prefill if m.memory.measured_as == "prefill" else state
        t_v, m_v = _exp_verdict(t, m.time.exponent, tol.exponent), _exp_verdict(mem, m.memory.exponent, tol.exponent)
        q_v, q_tol, q_fig = quality_verdict(m.quality, perplexity_quality(run, m.method), tol)
        mqar = mqar_accuracy(run, m.method)
        tps = tokens_per_s_at_longest(run, m.method, m.attention)
        registered = not (not run.df.empty and "mixer" in run.df
                          and (run.df[run.df["mixer"] == m.method]["status"] == "missing").any())
        methods.append({
            "method": m.name + ("" if registered else " (missing)"),
            "time (guide)": m.time.as_written, "time exp. claimed": f"{m.time.exponent:g}",
            "time exp. measured": t.text if t.value is not None else "-",
            "FLOPs exp.": _fmt(flops.value), "time verdict": t_v,
            "memory (guide)": m.memory.as_written,
            "memory exp. claimed": f"{m.memory.exponent:g} ({m.memory.measured_as})",
            "prefill-memory exp.": prefill.text if prefill.value is not None else "-",
            "decode-state exp.": state.text if state.value is not None else "-",
            "memory verdict": m_v,
            "quality (guide)": m.quality.as_written, "quality measured": q_fig.text, "quality verdict": q_v,
            "MQAR accuracy": mqar.text, "tokens/s at longest n": tps.text,
        })
        claims.append(_claim_row(f"{m.method}_time", m.method, f"time {m.time.as_written}",
                                 f"exponent of forward time_s = {m.time.exponent:g}", f"± {tol.exponent:g}", t, t_v,
                                 "Master Comparison Table"))
        held = ("exponent of forward peak_tensor_bytes" if m.memory.measured_as == "prefill"
                else "exponent of decode state_bytes")
        claims.append(_claim_row(f"{m.method}_memory", m.method, f"memory {m.memory.as_written}",
                                 f"{held} = {m.memory.exponent:g}", f"± {tol.exponent:g}", mem, m_v,
                                 "Master Comparison Table"))
        claims.append(_claim_row(f"{m.method}_quality", m.method, f"quality {m.quality.as_written}",
                                 "100 x ppl(standard) / ppl(method), same budget", q_tol, q_fig, q_v,
                                 "Master Comparison Table"))
    for c in cf.claims:
        if c.check == "model_value":  # whole-model claims: judged in the model_figures section (harness.model_report)
            continue
        if only is None or any(fnmatch.fnmatchcase(c.id, g) for g in only):
            claims.append(check_claim(run, c, cf))
    return pd.DataFrame(methods), pd.DataFrame(claims)
