"""The report section of a ``perplexity`` entry: validation bpb, perplexity and quality % of each mixer against
the baseline, the learning-rate sweep, and the training curves."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ..analysis import quality_table
from ..claims import budget_text
from ..report.markdown import heading, md
from ..report.plots import curves_plot

if TYPE_CHECKING:
    from ..config import BenchmarkEntry
    from ..report.run import RunData


def section(run: RunData, entry: BenchmarkEntry) -> list[str]:
    p = run.params(entry)
    baseline = p.baseline
    lines = heading(entry) + [
        "Every mixer in the same byte-level DecoderLM (vocabulary 256), trained from the same seed on the same "
        "batches for the same token budget (`train_tokens`) with the same optimiser and schedule; the best "
        "learning rate of the sweep per mixer (by validation bpb), then further training seeds at it. Validation bits-per-byte (`val_bpb`) scores every byte of the "
        "held-out split once (non-overlapping windows of the training context; `masked_lm`: the masked bytes "
        "only), `val_ppl` = 2^bpb is the per-byte perplexity.", "",
        f"**Quality** = 100 × ppl(`{baseline}`) / ppl(mixer) under the same budget and objective "
        "(= 100 × 2^(bpb(baseline) − bpb(mixer))): 100 is as good as the baseline, above 100 better. "
        f"`causal_lm` mixers are compared with causal `{baseline}`; bidirectional-only mixers are trained as "
        f"masked-LM encoders (15% of bytes masked) and compared with a bidirectional `{baseline}` encoder "
        "(`masked_lm`).", ""]
    sub = run.rows(entry.label)
    q = quality_table(sub, baseline)
    if q.empty:
        return lines + ["_(no perplexity results)_", ""]
    corpus = sub["corpus"].dropna().unique() if "corpus" in sub else []
    if len(corpus):
        lines += [f"Corpus: {', '.join(map(str, corpus))}; validation split: its last {p.corpus.val_fraction:.0%} "
                  "of bytes (contiguous, never trained on).", ""]
    lines += [md(quality_columns(q), floatfmt=".4g"), "",
              "**quality %** is the mean over the training seeds at the best lr (seed k of a mixer against seed k "
              "of the baseline: the same batches); **spread** its min-max over those seeds; **budget**: optimiser "
              "steps, training tokens (steps x batch x context) and model parameters. The best lr was chosen on "
              "the first seed's validation bpb, so that seed's figure is slightly favoured; the others are not.",
              ""] + lr_sweep(sub)
    failed = sub[sub["status"] != "ok"]
    if not failed.empty:
        lines += ["Cells without a result: " + ", ".join(f"{m} ({s})" for m, s in
                                                         zip(failed["mixer"], failed["status"])) + ".", ""]
    best = sub[(sub["status"] == "ok") & (sub["metric"] == "val_bpb") & (sub["best"] == True)]  # noqa: E712
    path = run.plots / f"{entry.label}-curves.png"
    if curves_plot(best, run.out, path, f"{entry.label}: training loss (line, smoothed) and validation bpb (markers)",
                   run.specs):
        lines += [f"![{entry.label} loss curves](plots/{path.name})", ""]
    return lines


def quality_columns(q: pd.DataFrame) -> pd.DataFrame:
    """The table of the section: per mixer, the mean over seeds, the spread, the seeds and the budget."""
    get = lambda c: q[c] if c in q else pd.Series([None] * len(q), index=q.index)  # noqa: E731
    spread = [f"{lo:.1f}-{hi:.1f}" if n and n > 1 else ("1 seed" if n == 1 else "-")
              for lo, hi, n in zip(get("quality_min"), get("quality_max"), get("seeds").fillna(0).astype(int))]
    budget = [budget_text(s, t, p) for s, t, p in zip(get("steps"), get("train_tokens"), get("model_params"))]
    table = pd.DataFrame({"objective": q["mode"], "context": q["seq_len"], "mixer": q["mixer"], "impl": q["impl"],
                          "val_bpb": q["val_bpb"], "val_ppl": q["val_ppl"], "quality %": q["quality"],
                          "spread": spread, "seeds": get("seeds"), "lr": get("lr"), "budget": budget,
                          "train tok/s": get("tokens_per_s")})
    return table


def lr_sweep(sub: pd.DataFrame) -> list[str]:
    """val_bpb of every learning rate of the sweep (first seed; when there are several lrs), the best marked, and
    the further seeds at the best lr."""
    sweep = sub[(sub["status"] == "ok") & (sub["metric"] == "val_bpb")]
    if "lr" not in sweep or sweep["lr"].nunique() <= 1:
        return []
    seeds = sweep[sweep["sweep_role"] == "seed"] if "sweep_role" in sweep else sweep.iloc[0:0]
    sweep = sweep[sweep["sweep_role"] != "seed"] if "sweep_role" in sweep else sweep
    sweep = sweep.assign(cell=[f"{'*' if b else ''}{v:.4f}" if v is not None and not pd.isna(v) else "diverged"
                               for v, b in zip(sweep["value"], sweep["best"])])
    grid = sweep.pivot_table(index=["mode", "seq_len", "mixer"], columns="lr", values="cell",
                             aggfunc="last").reset_index()
    grid.columns = [f"lr={c:g}" if isinstance(c, float) else str(c) for c in grid.columns]
    if not seeds.empty:
        more = seeds.groupby(["mode", "seq_len", "mixer"]).apply(
            lambda g: ", ".join(f"seed {int(s)}: {v:.4f}" for s, v in zip(g["train_seed"], g["value"])),
            include_groups=False).rename("further seeds at the best lr").reset_index()
        grid = grid.merge(more, on=["mode", "seq_len", "mixer"], how="left").fillna("")
    return ["### Learning-rate sweep (val_bpb; * = best)", "",
            grid.to_markdown(index=False, disable_numparse=True) + "\n", *edge_note(sweep), ""]


def edge_note(sweep: pd.DataFrame) -> list[str]:
    """Mixers whose best lr is the smallest or largest of the sweep: their optimum may lie outside it."""
    lrs = sorted(sweep["lr"].dropna().unique())
    best = sweep[sweep["best"].fillna(False).astype(bool)]
    edge = sorted({f"{m} ({lr:g})" for m, lr in zip(best["mixer"], best["lr"]) if lr in (lrs[0], lrs[-1])})
    if not edge:
        return []
    return [f"Best at an edge of the sweep ({lrs[0]:g}-{lrs[-1]:g}), so a better lr may lie outside it: "
            f"{', '.join(edge)}.", ""]
