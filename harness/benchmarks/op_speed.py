"""``op_speed``: the forward time of each implementation of a mixer's core operator, side by side in one process.

For every mixer of the suite that has an op in ``architectures.ops.catalog`` (ops are named after their mixer), each
registered implementation (ours: the fast form and the naive loop; other projects' PyTorch references) runs on the
same inputs of shape (batch, seq_len, n_heads, d_model // n_heads). A cell is one implementation at one length; an
implementation whose package is not installed is a skipped cell. Rows: ``time_s`` (median, quartiles beside it),
``tokens_per_s``, and ``source`` / ``op_impl`` extras. The report shows each implementation's time relative to the
suite's ``reference_impl`` (by default each op's own fast form: "chunk", "blocked", ...).
"""
from __future__ import annotations

import fnmatch
import itertools
from typing import Any, Iterator

import torch
from pydantic import BaseModel, ConfigDict, Field

from architectures.ops import catalog

from ..config import ResolvedMixer
from ..device import time_callable
from . import Benchmark, Cell, RunContext, SkipCell, metric, register_benchmark


class OpSpeedParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    impls: list[str] = Field(default=["*"], min_length=1)  # globs over implementation names
    # the report divides every time by this implementation's; None: each op's own fast form (its catalogue `fast`)
    reference_impl: str | None = None


@register_benchmark("op_speed")
class OpSpeed(Benchmark):
    modes = ("forward",)
    Params = OpSpeedParams
    description = "forward time of every implementation of a mixer's operator (ours and peers' references)"

    def timed_metric(self) -> str | None:
        return "time_s"

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        from ._op_speed_report import section

        return section(run, entry)

    def cells(self, mixers: list[ResolvedMixer]) -> Iterator[Cell]:
        catalog.load_all()
        params: OpSpeedParams = self.params
        sweep = self.entry.sweep_for(self.device.type)
        for m in self.entry.select(mixers):
            impls = list(catalog.OPS.get(m.name).impls) if m.name in catalog.OPS else ["-"]
            impls = [i for i in impls if i == "-" or any(fnmatch.fnmatchcase(i, g) for g in params.impls)]
            for impl, b, d, h, dt in itertools.product(impls, sweep.batch, sweep.d_model, sweep.n_heads, sweep.dtype):
                for n in sorted(sweep.seq_len):
                    yield Cell(self.entry.label, self.name, m.label, m.name, impl, "forward", n, b, d, h, dt,
                               self.suite.seed, {}, m.missing)

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        if cell.mixer_name not in catalog.OPS:
            raise SkipCell(f"no operator registered for {cell.mixer_name!r} in architectures.ops.catalog")
        op = catalog.OPS.get(cell.mixer_name)
        impl = op.impls[cell.impl]
        missing = impl.missing()
        if missing:
            raise SkipCell(f"{impl.name} needs {', '.join(missing)} (not installed)")
        if cell.d_model % cell.n_heads:
            raise SkipCell(f"d_model={cell.d_model} is not divisible by n_heads={cell.n_heads}")
        generator = torch.Generator().manual_seed(cell.seed)
        inputs = op.make_inputs(cell.batch, cell.seq_len, cell.n_heads, cell.d_model // cell.n_heads,
                                getattr(torch, cell.dtype), ctx.device, generator)

        def fn():
            with torch.no_grad():
                return impl.fn(inputs)

        t = ctx.timing
        timing = time_callable(fn, ctx.device, warmup=t.warmup, min_run_time=t.min_run_time_s,
                               min_repeats=t.min_repeats, max_time=t.max_time_s)
        extra = {"source": impl.source, "op": op.name, "notes": impl.notes,
                 "reference_impl": self.params.reference_impl or op.fast}
        return [metric("time_s", timing.median_s, "s", q1_s=timing.q1_s, q3_s=timing.q3_s, iqr_s=timing.iqr_s,
                       repeats=timing.repeats, number_per_run=timing.number_per_run, timer=timing.timer, **extra),
                metric("tokens_per_s", cell.batch * cell.seq_len / timing.median_s, "tok/s", **extra)]
