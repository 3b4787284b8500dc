"""The report section of a ``claims`` entry: the guide's Master Comparison Table with measured columns beside the
claimed ones and a verdict per claim (``harness.claims``), from the copy of the claims file in the run directory."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..claims import evaluate, load_claims
from ..report.markdown import md

if TYPE_CHECKING:
    from ..config import BenchmarkEntry
    from ..report.run import RunData


def section(run: "RunData", entry: "BenchmarkEntry") -> list[str]:
    copy = run.out / "claims.yaml"  # copied when the run started (Claims.run_figures)
    if not copy.exists():
        return ["## The guide's Master Comparison Table, measured", "",
                f"_(no claims.yaml in {run.out}: it is copied there when a run starts)_", ""]
    cf = load_claims(copy, run.specs)
    methods, claims = evaluate(run, cf)
    claims.to_csv(run.out / "claims.csv", index=False)
    t = cf.tolerances
    return ["## The guide's Master Comparison Table, measured", "",
            "The guide's cells beside the figures measured in this run, and a verdict per claim: `holds`, "
            "`does not hold`, `inconclusive at this budget` (a figure measured over several training seeds whose "
            "spread straddles the edge of the tolerance), or `not measurable here` (the claims table below says "
            "why). Claims, comparisons and "
            "tolerances come from `claims.yaml` (a copy of the repository's `claims/guide.yaml`).", "",
            f"- **Exponents** are least-squares slopes of log(figure) on log(n) over the longest lengths of the "
            f"scaling sweep (`analysis.scaling_fits`, ± its standard error; where several scaling entries measure a "
            f"method, the fit over the widest range of n), held to the claimed exponent within "
            f"± {t.exponent:g}: time = forward `time_s` (FLOPs exponent beside it), prefill memory = forward "
            "`peak_tensor_bytes`, decode state = `state_bytes` after n tokens. A memory cell is held to the prefill "
            "exponent or, where the claims file says so (Mamba's O(d)), to the decode-state exponent.",
            f"- **Quality** = 100 x ppl(standard) / ppl(method), both trained with the same budget and "
            f"hyperparameters (`perplexity` benchmark; a bidirectional method against a bidirectional standard): "
            f"the best of the learning-rate sweep, the mean over the training seeds at it, with its min-max spread, "
            f"the number of seeds and the budget (steps, training tokens, parameters) beside it. "
            f"\"~X%\" holds within ± {t.quality_points:g} points, \"X%+\" from X - {t.quality_at_least_points:g}, "
            f"for the whole spread; a spread across the edge is inconclusive.",
            "- **MQAR accuracy**: best learning rate, mean over the MQAR configurations the method ran (per "
            "configuration in the `mqar` section). **tokens/s**: forward of one layer at the longest length it ran.",
            "", md(methods), "", "### Claims and verdicts", "",
            "Every claim checked, the figure it is held to, the tolerance, the measured figure and the verdict "
            "(also in `claims.csv`).", "",
            md(claims.drop(columns=["source"])), ""]
