"""``equivalence``: does a mixer compute the same function as a reference mixer (default ``standard``) when given
the same weights? This checks the guide's "same math" claim of Flash Attention.

Per cell, the reference and the cell's mixer are built with the same seed and the reference's weights are loaded
into the mixer (``load_state_dict(strict=True)``: a mixer whose parameters differ from the reference's is skipped,
it is a different function by construction). On the same random input:

- ``forward``: ``max_abs_diff`` = max |y - y_ref| and ``max_rel_diff`` = max_abs_diff / max |y_ref|;
- ``train``: the same for the input gradient under the same output gradient (``grad_max_abs_diff``,
  ``grad_max_rel_diff``).

The claims file holds these against a tolerance per dtype (the rounding of fp32 or bf16 arithmetic done in another
order; a different function is off by orders of magnitude more).
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

import architectures

from . import Benchmark, Cell, RunContext, SkipCell, metric, register_benchmark


class EquivalenceParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    reference: str = "standard"  # registry name of the reference mixer
    attention: str = "causal"  # or "bidirectional"


@register_benchmark("equivalence")
class Equivalence(Benchmark):
    modes = ("forward", "train")
    Params = EquivalenceParams
    description = "same function as a reference mixer with the same weights? (max abs / rel difference)"

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        """Per mixer, mode, dtype and length: the largest absolute and relative difference from the reference."""
        from ..report.markdown import heading, md

        p: EquivalenceParams = run.params(entry)
        rows = run.rows(entry.label)
        lines = heading(entry) + [
            f"Each mixer with `{p.reference}`'s weights ({p.attention} attention) against `{p.reference}` on the "
            "same random input: `max_rel_diff` = max |y - y_ref| / max |y_ref| of the outputs (`forward`) or of the "
            "input gradients under the same output gradient (`train`). Rounding of the same function computed in "
            "another order is ~1e-7 in float32, ~1e-2 in bfloat16; a different function is off by orders of "
            "magnitude more.", ""]
        if rows.empty:
            return lines + ["_(no results)_", ""]
        ok = rows[(rows["status"] == "ok") & rows["metric"].isin(["max_abs_diff", "max_rel_diff", "grad_max_abs_diff",
                                                                   "grad_max_rel_diff"])]
        if not ok.empty:
            ok = ok.assign(metric=ok["metric"].str.removeprefix("grad_"))
            table = ok.pivot_table(index=["mixer", "impl", "mode", "dtype", "seq_len"], columns="metric",
                                   values="value", aggfunc="max").reset_index()
            table.columns.name = None
            lines += [md(table, floatfmt=".3g"), ""]
        failed = rows[rows["status"] != "ok"]
        if not failed.empty:
            lines += ["Cells without a result:", "", md(failed[["mixer", "mode", "seq_len", "status", "error"]]), ""]
        return lines

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        p: EquivalenceParams = self.params
        if cell.mixer_name == p.reference:
            raise SkipCell(f"{cell.mixer_name} is the reference")
        causal = p.attention == "causal"
        dtype = getattr(torch, cell.dtype)
        ref_cls, cls = architectures.get_mixer(p.reference), architectures.get_mixer(cell.mixer_name)
        for c in (ref_cls, cls):
            if p.attention not in c.spec.modes:
                raise SkipCell(f"{c.name} is not {p.attention}")
        reason = cls.unavailable_reason(cell.impl, ctx.device, dtype)
        if reason:
            raise SkipCell(reason)
        torch.manual_seed(cell.seed)
        ref = architectures.create_mixer(p.reference, cell.d_model, cell.n_heads, causal=causal)
        mixer = architectures.create_mixer(cell.mixer_name, cell.d_model, cell.n_heads, causal=causal,
                                           impl=cell.impl, **cell.hparams)
        ref_hp = {k: v for k, v in ref.hparams().items()}
        shared = {k: v for k, v in mixer.hparams().items() if k in ref_hp}
        if any(ref_hp[k] != v for k, v in shared.items()):
            raise SkipCell(f"hyperparameters differ from {p.reference}'s: {shared} vs {ref_hp}")
        try:
            mixer.load_state_dict(ref.state_dict(), strict=True)
        except RuntimeError as err:
            raise SkipCell(f"parameters differ from {p.reference}'s: {str(err).splitlines()[0]}") from None
        ref, mixer = ref.to(ctx.device, dtype), mixer.to(ctx.device, dtype)
        g = torch.Generator(device="cpu").manual_seed(cell.seed)
        x = torch.randn(cell.batch, cell.seq_len, cell.d_model, generator=g).to(ctx.device, dtype)

        def diff(a: torch.Tensor, b: torch.Tensor, prefix: str) -> list[dict[str, Any]]:
            abs_diff = float((a.float() - b.float()).abs().max())
            scale = float(b.float().abs().max())
            return [metric(f"{prefix}max_abs_diff", abs_diff, "abs"),
                    metric(f"{prefix}max_rel_diff", abs_diff / scale if scale else float("inf"), "ratio")]

        if cell.mode == "forward":
            with torch.no_grad():
                return diff(mixer(x), ref(x), "")
        grad_out = torch.randn(cell.batch, cell.seq_len, cell.d_model, generator=g).to(ctx.device, dtype)
        grads = []
        for m in (mixer, ref):
            xi = x.clone().requires_grad_(True)
            m(xi).backward(grad_out)
            grads.append(xi.grad)
        return diff(grads[0], grads[1], "grad_")
