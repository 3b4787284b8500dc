"""Benchmark kinds: a registry of classes that turn a suite entry into cells and a cell into result rows.

A benchmark kind is registered with ``@register_benchmark("name")`` next to its class. It declares its modes and a
strict pydantic ``Params`` model for the ``params:`` block of its suite entries, expands the sweep into ``Cell``s,
and measures one cell at a time, returning metric rows. The runner owns everything else (statuses, budgets, files).
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import torch
from pydantic import BaseModel, ConfigDict

from architectures.registry import Registry

from ..config import BenchmarkEntry, ResolvedMixer, Suite

if TYPE_CHECKING:
    from ..report.run import RunData


class SkipCell(Exception):
    """Raised by a benchmark when a cell cannot run here (the reason is recorded, status `skipped`)."""


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True)
class Cell:
    benchmark: str  # the suite entry's label
    kind: str  # the benchmark kind (registry name)
    mixer: str  # the mixer's label in the suite
    mixer_name: str  # the mixer's registry name
    impl: str
    mode: str
    seq_len: int
    batch: int
    d_model: int
    n_heads: int
    dtype: str
    seed: int
    hparams: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    missing: bool = field(default=False, compare=False, hash=False)

    @property
    def cell_id(self) -> str:
        return (f"{self.benchmark}/{self.mixer}[{self.impl}]/{self.mode}/n={self.seq_len}/b={self.batch}"
                f"/d={self.d_model}/h={self.n_heads}/{self.dtype}/seed={self.seed}")

    @property
    def series(self) -> tuple:
        """Cells that differ only in seq_len: after an OOM or timeout at n, longer n in the series are skipped."""
        return (self.benchmark, self.mixer, self.impl, self.mode, self.batch, self.d_model, self.n_heads,
                self.dtype, self.seed)

    def fields(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("missing")
        return d


@dataclass
class RunContext:
    device: torch.device
    timing: Any  # config.Timing
    matmul_peak: dict[str, float]  # dtype name -> measured FLOP/s on this device
    out: Path | None = None  # the run directory (benchmarks that save checkpoints or curves write under it)
    suite_dir: Path | None = None  # the suite file's directory: relative paths in params are resolved against it


class Benchmark:
    name: ClassVar[str]
    modes: ClassVar[tuple[str, ...]] = ("forward",)
    Params: ClassVar[type[BaseModel]] = NoParams
    description: ClassVar[str] = ""

    def __init__(self, entry: BenchmarkEntry, suite: Suite, device: torch.device):
        self.entry, self.suite, self.device = entry, suite, device
        self.params = self.Params.model_validate(entry.params)

    def cells(self, mixers: list[ResolvedMixer]) -> Iterator[Cell]:
        """Default grid: mixers x modes x batch x d_model x n_heads x dtype x seq_len (seq_len innermost, ascending)."""
        sweep = self.entry.sweep_for(self.device.type)
        for m in self.entry.select(mixers):
            for mode, b, d, h, dt in itertools.product(self.entry.modes, sweep.batch, sweep.d_model, sweep.n_heads,
                                                       sweep.dtype):
                for n in sorted(sweep.seq_len):
                    yield Cell(self.entry.label, self.name, m.label, m.name, m.impl, mode, n, b, d, h, dt,
                               self.suite.seed, dict(m.hparams), m.missing)

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        raise NotImplementedError

    def timed_metric(self) -> str | None:
        """The metric of this entry's cells that is a time (a median of repeats after warm-up), which ``harness ab``
        compares between two revisions; None (the default): the entry's cells are not timed."""
        return None

    def run_figures(self, cells: list[Cell], specs: dict[str, dict], out: Path) -> dict[str, Any]:
        """Figures the report shows that are not measurements of a cell, computed when the run starts (from the
        planned cells and the mixers' specs) and saved in ``OUT/figures.json`` under the entry's label, so that a
        report never builds a model. JSON-serialisable; default none."""
        return {}

    # True: the section goes at the top of the report, before the environment (e.g. the Master Comparison Table)
    report_summary: ClassVar[bool] = False

    @classmethod
    def report_section(cls, run: "RunData", entry: "BenchmarkEntry") -> list[str]:
        """Markdown lines of this entry's section of the report. Plots are saved under ``run.plots``
        (``run.out / "plots"``). Reads only ``run`` (the run directory); default: no section."""
        return []


BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark")


def register_benchmark(name: str) -> Callable[[type[Benchmark]], type[Benchmark]]:
    return BENCHMARKS.decorator(name)


def validate_params(kind: str, params: dict[str, Any]) -> BaseModel:
    return BENCHMARKS.get(kind).Params.model_validate(params)


def metric(name: str, value: Any, unit: str, **extra: Any) -> dict[str, Any]:
    return {"metric": name, "value": value, "unit": unit, **extra}


def _discover() -> None:
    """Import every module of this package: each registers its kind(s) with @register_benchmark."""
    import importlib
    import pkgutil

    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
        importlib.import_module(f"{__name__}.{module}")


_discover()
