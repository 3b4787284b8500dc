"""The report section of a ``perplexity`` entry: validation bpb, perplexity and quality % of each mixer against
the baseline, the learning-rate sweep, and the training curves."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ..analysis import quality_table
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
        "learning rate of the sweep per mixer. Validation bits-per-byte (`val_bpb`) scores every byte of the "
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
    table = q[["mode", "seq_len", "mixer", "impl", "val_bpb", "val_ppl", "quality", "lr", "train_tokens",
               "tokens_per_s"]].rename(columns={"mode": "objective", "seq_len": "context", "quality": "quality %",
                                                "tokens_per_s": "train tok/s"})
    table["train_tokens"] = table["train_tokens"].astype("Int64")
    lines += [md(table, floatfmt=".4g"), ""] + lr_sweep(sub)
    failed = sub[sub["status"] != "ok"]
    if not failed.empty:
        lines += ["Cells without a result: " + ", ".join(f"{m} ({s})" for m, s in
                                                         zip(failed["mixer"], failed["status"])) + ".", ""]
    best = sub[(sub["status"] == "ok") & (sub["metric"] == "val_bpb") & (sub["best"] == True)]  # noqa: E712
    path = run.plots / f"{entry.label}-curves.png"
    if curves_plot(best, run.out, path, f"{entry.label}: training loss (line, smoothed) and validation bpb (dots)"):
        lines += [f"![{entry.label} loss curves](plots/{path.name})", ""]
    return lines


def lr_sweep(sub: pd.DataFrame) -> list[str]:
    """val_bpb of every learning rate of the sweep (when there are several), the best marked."""
    sweep = sub[(sub["status"] == "ok") & (sub["metric"] == "val_bpb")]
    if sweep["lr"].nunique() <= 1:
        return []
    sweep = sweep.assign(cell=[f"{'*' if b else ''}{v:.4f}" if v is not None and not pd.isna(v) else "diverged"
                               for v, b in zip(sweep["value"], sweep["best"])])
    grid = sweep.pivot_table(index=["mode", "seq_len", "mixer"], columns="lr", values="cell",
                             aggfunc="last").reset_index()
    grid.columns = [f"lr={c:g}" if isinstance(c, float) else str(c) for c in grid.columns]
    return ["### Learning-rate sweep (val_bpb; * = best)", "",
            grid.to_markdown(index=False, disable_numparse=True) + "\n", ""]
