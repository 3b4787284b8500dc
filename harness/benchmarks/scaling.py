"""``scaling``: time, memory, FLOPs and decode state of one mixer layer against sequence length.

Modes (``seq_len`` = n):
- ``forward``: the layer's parallel forward on (B, n, D) under ``no_grad`` (prefill / inference).
- ``train``: forward and backward (a fixed random output gradient), gradients reset each call.
- ``decode``: one ``step`` for one new token with a state (KV cache or recurrent state) that has seen n tokens.

``params.scope``: ``layer`` (the default) measures the registered mixer with its projections, what a model pays;
``operator`` measures the mixer's core operator alone (its entry in ``architectures.ops.catalog``, our fast form) on
(B, n, H, d_model / H) inputs, what the guide's complexity cells describe: at n < d^2 a layer's O(n d^2) projections
hide an O(n^1.5 d) attention pattern. Operator cells have no decode mode and no parameters.

Per cell, an untimed instrumented call gives the deterministic figures (FLOPs, peak live tensor bytes, the SDPA
kernel that ran); then the call is timed (``harness.device.time_callable``). FLOPs follow
``harness.measure.FLOP_CONVENTION``: ``flops`` algorithmic, ``flops_executed`` what the kernels ran; ``flops_per_s``
divides the first by the time, ``peak_fraction`` the second (the hardware's utilisation, bounded by 1). Rows:

    time_s (median; q1_s, q3_s, iqr_s, repeats beside it)   tokens_per_s    flops    flops_executed    flops_per_s
    peak_fraction    peak_tensor_bytes   cuda_peak_bytes (CUDA only)   params (forward)   state_bytes, state_bytes_analytic (decode)
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

import architectures
from architectures.mixer import measured_state_bytes
from architectures.ops import catalog

from ..device import allocator_peak, time_callable
from ..measure import instrumented
from . import Benchmark, Cell, RunContext, SkipCell, metric, register_benchmark

METRICS = ("time", "memory", "flops", "state", "params")


class FitParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    last_points: int = Field(default=3, ge=2)  # fit over the longest k lengths of the sweep: the asymptotic part
    tolerance: float = Field(default=0.25, gt=0)  # |measured - claimed exponent| <= tolerance -> "holds"


class ScalingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    metrics: list[Literal[METRICS]] = Field(default=list(METRICS), min_length=1)  # type: ignore[valid-type]
    attention: Literal["causal", "bidirectional"] = "causal"
    fit: FitParams = Field(default_factory=FitParams)
    crossover_against: list[str] = Field(default=["flash", "standard"])  # mixer labels to compare forward time with
    scope: Literal["layer", "operator"] = "layer"  # the whole mixer layer, or its core operator only (see above)


@register_benchmark("scaling")
class Scaling(Benchmark):
    modes = ("forward", "train", "decode")
    Params = ScalingParams
    description = "time, memory, FLOPs and decode state of one layer vs sequence length; exponent fits"

    def timed_metric(self) -> str | None:
        return "time_s" if "time" in self.params.metrics else None

    def run_figures(self, cells: list[Cell], specs: dict[str, dict], out) -> dict[str, Any]:
        """The KV cache per token of growing caches at this run's decode sizes and at the published configurations
        of the specs (``analysis.kv_cache_per_token``, mixers built on the meta device), for the report."""
        import pandas as pd

        from ..analysis import kv_cache_per_token

        decode = [c.fields() for c in cells if c.mode == "decode" and not c.missing]
        if not decode or self.params.scope == "operator":
            return {}
        table = kv_cache_per_token(pd.DataFrame(decode), specs)
        return {"kv_cache_per_token": table.to_dict("records")} if not table.empty else {}

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        from ._scaling_report import section

        return section(run, entry)

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        params: ScalingParams = self.params
        cls = architectures.get_mixer(cell.mixer_name)
        causal = params.attention == "causal"
        mode_needed = "causal" if causal else "bidirectional"
        if mode_needed not in cls.spec.modes:
            raise SkipCell(f"not {mode_needed}: {cell.mixer_name} supports {sorted(cls.spec.modes)}")
        if params.scope == "operator":
            return self._run_operator(cell, ctx, causal, getattr(torch, cell.dtype))
        if cell.mode == "decode" and ("decode" not in cls.spec.modes or not causal):
            raise SkipCell(f"{cell.mixer_name} does not decode" if causal else "decode needs causal attention")
        dtype = getattr(torch, cell.dtype)
        reason = cls.unavailable_reason(cell.impl, ctx.device, dtype)
        if reason:
            raise SkipCell(reason)

        torch.manual_seed(cell.seed)
        mixer = architectures.create_mixer(cell.mixer_name, cell.d_model, cell.n_heads, causal=causal,
                                           impl=cell.impl, **cell.hparams).to(ctx.device, dtype)
        B, n, D = cell.batch, cell.seq_len, cell.d_model
        want = set(params.metrics)
        rows: list[dict[str, Any]] = []
        tokens = B * n

        if cell.mode == "forward":
            x = torch.randn(B, n, D, device=ctx.device, dtype=dtype)

            def fn():
                with torch.no_grad():
                    return mixer(x)
        elif cell.mode == "train":
            x = torch.randn(B, n, D, device=ctx.device, dtype=dtype, requires_grad=True)
            grad_out = torch.randn(B, n, D, device=ctx.device, dtype=dtype)

            def fn():
                mixer.zero_grad(set_to_none=True)
                x.grad = None
                mixer(x).backward(grad_out)
        else:  # decode: a state that has seen n tokens, then one step
            tokens = B
            with torch.no_grad():
                _, state = mixer.prefill(torch.randn(B, n, D, device=ctx.device, dtype=dtype))
            x_t = torch.randn(B, D, device=ctx.device, dtype=dtype)
            if "state" in want:
                measured, analytic = measured_state_bytes(state), mixer.state_bytes(B, n, dtype)
                if measured != analytic:
                    raise RuntimeError(f"decode state of {cell.mixer_name} holds {measured} bytes after {n} tokens "
                                       f"but state_bytes() says {analytic}")
                rows += [metric("state_bytes", measured, "B"), metric("state_bytes_analytic", analytic, "B")]

            def fn():
                with torch.no_grad():
                    return mixer.step(x_t, state)

        measured = self._measure(fn, tokens, cell, ctx)
        if "params" in want and cell.mode == "forward":
            measured.append(metric("params", sum(p.numel() for p in mixer.parameters()), "count",
                                   sdpa_backend=measured[0]["sdpa_backend"] if measured else None))
        return rows + measured

    def _run_operator(self, cell: Cell, ctx: RunContext, causal: bool, dtype: torch.dtype) -> list[dict[str, Any]]:
        """The core operator of the mixer (our fast form in the op catalogue) on (B, n, H, d_head) inputs."""
        catalog.load_all()
        if cell.mixer_name not in catalog.OPS:
            raise SkipCell(f"no operator registered for {cell.mixer_name!r} in architectures.ops.catalog")
        if cell.mode == "decode":
            raise SkipCell("scope: operator has no decode mode (the decode state belongs to the layer)")
        spec = architectures.get_mixer(cell.mixer_name).spec
        if cell.impl != spec.default_impl:
            raise SkipCell(f"scope: operator runs our {spec.default_impl!r} operator; impl {cell.impl!r} is measured "
                           "at layer scope")
        changed = {k: v for k, v in cell.hparams.items() if spec.default_hparams.get(k) != v}
        if changed:
            raise SkipCell(f"scope: operator builds the catalogue's inputs (default hyperparameters); {changed} is "
                           "measured at layer scope")
        if not causal:
            raise SkipCell("the catalogue's operators are causal")
        if cell.d_model % cell.n_heads:
            raise SkipCell(f"d_model={cell.d_model} is not divisible by n_heads={cell.n_heads}")
        op = catalog.OPS.get(cell.mixer_name)
        impl = op.impls[op.fast]
        inputs = op.make_inputs(cell.batch, cell.seq_len, cell.n_heads, cell.d_model // cell.n_heads, dtype,
                                ctx.device, torch.Generator().manual_seed(cell.seed))
        if cell.mode == "forward":
            def fn():
                with torch.no_grad():
                    return impl.fn(inputs)
        else:  # train: forward and backward to every floating-point input
            leaves = {k: v.detach().requires_grad_(True) if torch.is_tensor(v) and v.is_floating_point() else v
                      for k, v in inputs.items()}
            torch.manual_seed(cell.seed)
            with torch.no_grad():
                grad_out = torch.randn_like(impl.fn(inputs))

            def fn():
                for v in leaves.values():
                    if torch.is_tensor(v) and v.requires_grad:
                        v.grad = None
                impl.fn(leaves).backward(grad_out)
        rows = self._measure(fn, cell.batch * cell.seq_len, cell, ctx)
        for row in rows:
            row["op_impl"] = impl.name
        return rows

    def _measure(self, fn, tokens: int, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        """Deterministic figures from one instrumented call, then the timing."""
        want = set(self.params.metrics)
        rows: list[dict[str, Any]] = []
        inst = instrumented(fn)  # also records which SDPA kernel ran, so it runs whatever the metrics
        inst.result = None
        if "memory" in want:
            rows.append(metric("peak_tensor_bytes", inst.peak_tensor_bytes, "B"))
        if "flops" in want:
            rows.append(metric("flops", inst.flops, "FLOP"))
            rows.append(metric("flops_executed", inst.flops_executed, "FLOP"))
        if "memory" in want and ctx.device.type == "cuda":
            with allocator_peak(ctx.device) as peak:
                fn()
            rows.append(metric("cuda_peak_bytes", peak["peak_bytes"], "B"))
        if "time" in want:
            t = ctx.timing
            timing = time_callable(fn, ctx.device, warmup=t.warmup, min_run_time=t.min_run_time_s,
                                   min_repeats=t.min_repeats, max_time=t.max_time_s)
            rows.append(metric("time_s", timing.median_s, "s", q1_s=timing.q1_s, q3_s=timing.q3_s,
                               iqr_s=timing.iqr_s, repeats=timing.repeats, number_per_run=timing.number_per_run,
                               timer=timing.timer))
            rows.append(metric("tokens_per_s", tokens / timing.median_s, "tok/s"))
            if "flops" in want and inst.flops:
                rows.append(metric("flops_per_s", inst.flops / timing.median_s, "FLOP/s"))
                peak = ctx.matmul_peak.get(cell.dtype)
                if peak:  # what the hardware ran against what it can run (FLOP_CONVENTION)
                    rows.append(metric("peak_fraction", inst.flops_executed / timing.median_s / peak, "ratio"))
        for row in rows:
            row["sdpa_backend"] = inst.sdpa_backend
        return rows
