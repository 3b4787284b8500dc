"""``scaling``: time, memory, FLOPs and decode state of one mixer layer against sequence length.

Modes (``seq_len`` = n):
- ``forward``: the layer's parallel forward on (B, n, D) under ``no_grad`` (prefill / inference).
- ``train``: forward and backward (a fixed random output gradient), gradients reset each call.
- ``decode``: one ``step`` for one new token with a state (KV cache or recurrent state) that has seen n tokens.

Per cell, an untimed instrumented call gives the deterministic figures (FLOPs, peak live tensor bytes, the SDPA
kernel that ran); then the call is timed (``harness.device.time_callable``). Rows:

    time_s (median; q1_s, q3_s, iqr_s, repeats beside it)   tokens_per_s    flops    flops_per_s    peak_fraction
    peak_tensor_bytes   cuda_peak_bytes (CUDA only)   params (forward)   state_bytes, state_bytes_analytic (decode)
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

import architectures
from architectures.mixer import measured_state_bytes

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


@register_benchmark("scaling")
class Scaling(Benchmark):
    modes = ("forward", "train", "decode")
    Params = ScalingParams
    description = "time, memory, FLOPs and decode state of one layer vs sequence length; exponent fits"

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        params: ScalingParams = self.params
        cls = architectures.get_mixer(cell.mixer_name)
        causal = params.attention == "causal"
        mode_needed = "causal" if causal else "bidirectional"
        if mode_needed not in cls.spec.modes:
            raise SkipCell(f"not {mode_needed}: {cell.mixer_name} supports {sorted(cls.spec.modes)}")
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

        inst = instrumented(fn)  # also records which SDPA kernel ran, so it runs whatever the metrics
        inst.result = None
        if "memory" in want:
            rows.append(metric("peak_tensor_bytes", inst.peak_tensor_bytes, "B"))
        if "flops" in want:
            rows.append(metric("flops", inst.flops, "FLOP"))
        if "memory" in want and ctx.device.type == "cuda":
            with allocator_peak(ctx.device) as peak:
                fn()
            rows.append(metric("cuda_peak_bytes", peak["peak_bytes"], "B"))
        if "params" in want and cell.mode == "forward":
            rows.append(metric("params", sum(p.numel() for p in mixer.parameters()), "count"))
        if "time" in want:
            t = ctx.timing
            timing = time_callable(fn, ctx.device, warmup=t.warmup, min_run_time=t.min_run_time_s,
                                   min_repeats=t.min_repeats, max_time=t.max_time_s)
            rows.append(metric("time_s", timing.median_s, "s", q1_s=timing.q1_s, q3_s=timing.q3_s,
                               iqr_s=timing.iqr_s, repeats=timing.repeats, number_per_run=timing.number_per_run,
                               timer=timing.timer))
            rows.append(metric("tokens_per_s", tokens / timing.median_s, "tok/s"))
            if "flops" in want and inst.flops:
                achieved = inst.flops / timing.median_s
                rows.append(metric("flops_per_s", achieved, "FLOP/s"))
                peak = ctx.matmul_peak.get(cell.dtype)
                if peak:
                    rows.append(metric("peak_fraction", achieved / peak, "ratio"))
        for row in rows:
            row["sdpa_backend"] = inst.sdpa_backend
        return rows
