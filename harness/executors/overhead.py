"""``python -m harness.executors.overhead``: what the isolated executor costs beside inline.

1. Per cell: the same trivial job (a cell of an entry that does not exist, so it fails at once and nothing is
   measured) through ``CellRunner.run`` in this process and through a worker's pipe, ``BLOCKS`` alternating blocks of
   ``PER_BLOCK`` jobs; the difference of the medians is the executor's own work per cell.
2. Per worker: the time from spawning a worker to its "ready" (``import torch``, the benchmarks built), 3 times.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

BLOCKS, PER_BLOCK = 5, 40


def main() -> None:
    from ..benchmarks import Cell
    from ..config import Suite
    from ..device import resolve_device
    from . import Job, Setup
    from .cell import CellRunner
    from .isolated import IsolatedExecutor, Worker

    suite = Suite.model_validate({"suite": "overhead", "mixers": ["standard"], "benchmarks": [{"kind": "scaling"}]})
    setup = Setup(suite=suite, device=resolve_device("cpu"), matmul_peak={"float32": 1e9},
                  out=Path(tempfile.mkdtemp()), suite_dir=None)
    cell = Cell("no_such_entry", "scaling", "standard", "standard", "torch", "forward", 16, 1, 16, 2, "float32", 0)
    job = Job(cell=cell, timing=suite.timing, threads=1, budget_s=60)
    inline, isolated = CellRunner(setup), IsolatedExecutor(echo_stderr=False)
    isolated.start(setup)
    isolated.submit(job)
    isolated.wait()  # the worker's start is not part of the per-cell figure
    per_job: dict[str, list[float]] = {"inline": [], "isolated": []}
    for _ in range(BLOCKS):
        started = time.perf_counter()
        for _ in range(PER_BLOCK):
            inline.run(job)
        per_job["inline"].append((time.perf_counter() - started) / PER_BLOCK)
        started = time.perf_counter()
        for _ in range(PER_BLOCK):
            isolated.submit(job)
            isolated.wait()
        per_job["isolated"].append((time.perf_counter() - started) / PER_BLOCK)
    isolated.close()
    starts = []
    for _ in range(3):
        started = time.perf_counter()
        worker = Worker(setup, echo_stderr=False)
        worker.receive(time.monotonic() + 600)
        starts.append(time.perf_counter() - started)
        worker.kill()
    med = {k: statistics.median(v) for k, v in per_job.items()}
    print(f"per job, median of {BLOCKS} blocks of {PER_BLOCK}: inline {med['inline'] * 1e3:.1f} ms, isolated "
          f"{med['isolated'] * 1e3:.1f} ms: executor overhead {(med['isolated'] - med['inline']) * 1e3:+.1f} ms/cell")
    print(f"worker start: {', '.join(f'{s:.1f}' for s in starts)} s")


if __name__ == "__main__":
    main()
