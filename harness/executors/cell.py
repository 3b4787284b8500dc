"""Measuring one cell inside whichever process runs it: the budget, the benchmark call, failures as rows."""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import signal
import threading
import traceback
from pathlib import Path
from typing import Iterator

import torch

from ..device import configure_cpu_allocator, device_info, empty_cache, is_oom


class CellTimeout(Exception):
    pass


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Raise CellTimeout in the main thread after ``seconds``. Elsewhere (or without SIGALRM) no limit applies here
    (the isolated executor's parent still kills a cell over its budget)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise CellTimeout(f"cell exceeded its time budget of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def failure(status: str, message: str) -> list[dict]:
    return [{"metric": None, "value": None, "unit": None, "status": status, "error": message}]


class CellRunner:
    """The benchmarks of one suite, built once per process, and the run context they measure in."""

    def __init__(self, setup):
        import torch._dynamo  # noqa: F401 - the first instrumented call imports it (seconds on a busy machine):
        # done here, outside every cell's budget, instead of inside the first cell's

        from ..benchmarks import BENCHMARKS, RunContext

        self.setup = setup
        self.benches = {e.label: BENCHMARKS.get(e.kind)(e, setup.suite, setup.device) for e in setup.suite.benchmarks}
        self.ctx = RunContext(device=setup.device, timing=setup.suite.timing, matmul_peak=setup.matmul_peak,
                              out=Path(setup.out), suite_dir=setup.suite_dir)
        # the processor or GPU this process measures on, in every row it returns: with Ray, cells of one run can come
        # from several machines, and a timing means little without the machine that took it
        self.device_name = device_info(setup.device)["device_name"]

    @classmethod
    def in_new_process(cls, setup) -> "CellRunner":
        """A worker's first step: the plugins and the CPU allocator the parent was started with."""
        from . import load_plugins

        load_plugins(setup.plugins)
        if setup.device.type == "cpu":
            configure_cpu_allocator(setup.cpu_allocator)
        return cls(setup)

    def run(self, job) -> list[dict]:
        """The cell's rows with status ok, or one row with its failure (error, oom, timeout, crashed, skipped), each
        with the ``device_name`` it was measured on."""
        return [{**row, "device_name": self.device_name} for row in self._measure(job)]

    def _measure(self, job) -> list[dict]:
        from ..benchmarks import SkipCell

        if self.setup.device.type == "cpu":
            torch.set_num_threads(job.threads)
        ctx = dataclasses.replace(self.ctx, timing=job.timing)
        try:
            with time_budget(job.budget_s):
                rows = self.benches[job.cell.benchmark].run_cell(job.cell, ctx)
            return [{**row, "status": "ok", "error": None} for row in rows]
        except SkipCell as err:
            return failure("skipped", str(err))
        except CellTimeout as err:
            return failure("timeout", str(err))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except SystemExit as err:
            return failure("crashed", f"the cell called sys.exit({err.code!r})")
        except BaseException as err:  # noqa: BLE001 - every failure of a cell is data
            status = "oom" if is_oom(err) else "error"
            tb = traceback.extract_tb(err.__traceback__)
            where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
            return failure(status, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}{where}")
        finally:
            gc.collect()
            empty_cache(self.setup.device)
