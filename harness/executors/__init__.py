"""Executors: where a cell runs. The runner plans, decides skips and writes the journal; an executor only turns a
``Job`` (one cell and its settings) into result rows, and a cell that takes its process down into a row too.

    inline     in the runner's own process (debugging; the measurement tests). A budget is a SIGALRM, which cannot
               stop C code; a segfault or sys.exit in a cell ends the run.
    isolated   (the CLI's default) in a worker subprocess reused from cell to cell; the parent enforces the wall
               budget with a kill (`timeout`), records a worker that dies (signal, exit code, its last stderr) as
               `crashed`, and starts a fresh worker for the next cell.
    ray        each cell a Ray task with its resource request (one GPU on CUDA, ``cpus`` CPUs on CPU), on a local or
               remote cluster; the driver streams the rows back into the same journal.

Interface: ``start(setup)``, ``submit(job)``, ``wait() -> (job, rows)``, ``close()``; ``slots`` cells may be in flight
at once (1 for inline and isolated).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

EXECUTORS = ("inline", "isolated", "ray")


class ExecutorError(Exception):
    """An executor that cannot run any cell (a worker that dies before its first cell, no cluster): the run stops."""

PLUGINS_ENV = "HARNESS_PLUGINS"  # comma-separated modules a worker imports first (they register extra mixers)


@dataclass(frozen=True)
class Setup:
    """What every process that runs cells needs once: the suite, the device and the run's fixed context."""
    suite: Any  # config.Suite
    device: torch.device
    matmul_peak: dict[str, float]
    out: Path
    suite_dir: Path | None
    cpu_allocator: str = "caching"
    plugins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """One cell to measure, with the settings the runner resolved for it."""
    cell: Any  # benchmarks.Cell
    timing: Any  # config.Timing (the entry's overrides applied)
    threads: int
    budget_s: float
    index: int = field(default=0, compare=False)  # position in the plan (for ordering and logs)


def load_plugins(names: tuple[str, ...] | list[str] | None = None) -> tuple[str, ...]:
    """Import plugin modules (``names``, else those in $HARNESS_PLUGINS) and export them to workers' environment."""
    import importlib

    if names is None:
        names = [n for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    names = tuple(n.strip() for n in names)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - any failure of a plugin is reported with its name
            raise ValueError(f"plugin module {name!r} cannot be imported: {type(err).__name__}: {err}") from None
    if names:
        os.environ[PLUGINS_ENV] = ",".join(names)
    return names


def make_executor(name: str, **options):
    if name == "inline":
        from .inline import InlineExecutor

        return InlineExecutor()
    if name == "isolated":
        from .isolated import IsolatedExecutor

        return IsolatedExecutor(**options)
    if name == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(**options)
    raise ValueError(f"unknown executor {name!r}; expected one of {', '.join(EXECUTORS)}")
