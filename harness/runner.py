"""The runner: suite -> grid of cells -> one measurement at a time -> ``OUT/results.jsonl`` -> report.

A cell never takes the run down: its exception becomes a row with status ``error``, an out-of-memory ``oom``, a
cell over the suite's ``time_budget_s`` ``timeout`` (SIGALRM in the main thread), and a ``SkipCell`` ``skipped`` with
its reason. After an OOM or a timeout at length n, the longer lengths of the same series are recorded as
``skipped`` without running. ``resume=True`` reruns only the cells that have no rows yet.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import yaml

import architectures

from .benchmarks import BENCHMARKS, Cell, RunContext, SkipCell
from .config import Suite, resolve_mixers
from .device import configure_cpu_allocator, cpu_memory_cap, empty_cache, is_oom
from .env import collect_env
from .measure import measure_matmul_peak
from .results import append_rows, read_rows


class CellTimeout(Exception):
    pass


class RunError(Exception):
    """A run that cannot start (results already in the output directory without --resume, duplicate cells)."""


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Raise CellTimeout in the main thread after ``seconds``. Elsewhere (or without SIGALRM) no hard limit applies;
    the timing loop's own max_time still bounds measurement."""
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


@dataclass
class RunSummary:
    out: Path
    cells: int
    ran: int
    reused: int
    statuses: Counter = field(default_factory=Counter)
    seconds: float = 0.0


def plan(suite: Suite, device: torch.device, only: str | None = None) -> list[Cell]:
    mixers = resolve_mixers(suite, only)
    cells: list[Cell] = []
    for entry in suite.benchmarks:
        bench = BENCHMARKS.get(entry.kind)(entry, suite, device)
        cells.extend(bench.cells(mixers))
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        raise RunError("the suite expands to duplicate cells (a repeated value in a sweep?)")
    return cells


def _matmul_peaks(cells: list[Cell], device: torch.device, known: dict[str, float] | None = None) -> dict[str, float]:
    """Measured matmul FLOP/s per dtype of the plan. A resumed run keeps the peaks it measured first (``known``):
    every cell's achieved fraction of peak is then relative to one figure, the one env.json shows."""
    known = known or {}
    return {dt: known[dt] if dt in known else measure_matmul_peak(device, getattr(torch, dt))
            for dt in sorted({c.dtype for c in cells})}


_ABSENT = object()  # a key one of two compared suites does not have


def suite_changes(old, new, path: str = "", limit: int = 20) -> list[str]:
    """Paths at which two resolved suites (the ``suite.yaml`` a run wrote) differ, e.g. ``suite.timing.min_repeats``
    or ``mixers[10]``: what a resumed run's earlier cells were measured under that its new cells are not."""
    changes: list[str] = []

    def walk(a, b, at: str) -> None:
        if len(changes) > limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in list(a) + [k for k in b if k not in a]:
                walk(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{at}.{k}" if at else str(k))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{at}[{i}]")
        elif a != b:
            changes.append(at or "(whole suite)")

    walk(old, new, path)
    return changes if len(changes) <= limit else changes[:limit] + ["..."]


def _row_base(run_id: str, suite: Suite, cell: Cell, device: torch.device) -> dict:
    return {"run_id": run_id, "suite": suite.suite, "cell_id": cell.cell_id, **cell.fields(),
            "device": str(device), "threads": torch.get_num_threads()}


def run_suite(suite: Suite, out: Path, device: torch.device, *, suite_path: Path | None = None,
              only: str | None = None, resume: bool = False, progress: bool = True,
              write_report: bool = True, cpu_allocator: str = "caching",
              threads: int | None = None, cpu_memory_fraction: float | None = 0.9) -> RunSummary:
    """Run every planned cell not yet in OUT/results.jsonl. ``threads`` (CPU) overrides the suite's
    ``timing.cpu_threads``; the thread count that ran is in env.json and in every row. On CPU the process's
    address space is capped at ``cpu_memory_fraction`` of physical memory while the cells run (``oom`` cells
    instead of the kernel's OOM killer; None or 0: no cap)."""
    with cpu_memory_cap(cpu_memory_fraction if device.type == "cpu" else None) as memory_cap:
        return _run_suite(suite, out, device, suite_path=suite_path, only=only, resume=resume, progress=progress,
                          write_report=write_report, cpu_allocator=cpu_allocator, threads=threads,
                          memory_cap=memory_cap)


def _run_suite(suite: Suite, out: Path, device: torch.device, *, suite_path: Path | None, only: str | None,
               resume: bool, progress: bool, write_report: bool, cpu_allocator: str, threads: int | None,
               memory_cap: str) -> RunSummary:
    started = time.perf_counter()
    out = Path(out)
    results_path = out / "results.jsonl"
    cells = plan(suite, device, only)
    existing = read_rows(results_path)
    if existing and not resume:
        raise RunError(f"{out} already holds results; pass --resume to complete that run, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)

    env_path = out / "env.json"
    old_env = json.loads(env_path.read_text()) if resume and env_path.exists() else {}
    run_id = old_env.get("run_id") or f"{suite.suite}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    default_threads = torch.get_num_threads()

    def threads_for(entry_threads) -> int:
        """--threads, else the entry's cpu_threads, else the suite's timing.cpu_threads, else torch's default."""
        if device.type != "cpu":
            return default_threads
        chosen = threads or entry_threads or suite.timing.cpu_threads or "all"
        return default_threads if chosen == "all" else chosen

    torch.set_num_threads(threads_for(None))
    allocator = configure_cpu_allocator(cpu_allocator) if device.type == "cpu" else "cuda caching allocator"
    env = {"run_id": run_id, **collect_env(device), "allocator": allocator, "memory_cap": memory_cap,
           "matmul_peak_flops": _matmul_peaks(cells, device, old_env.get("matmul_peak_flops"))}
    resolved = {"source": str(suite_path) if suite_path else None, "device": str(device), "only": only,
                "mixers": [m.model_dump() for m in resolve_mixers(suite, only)],
                "suite": suite.model_dump(mode="json")}
    if old_env:
        env["resumed_from"] = {k: old_env.get(k) for k in ("time_utc", "git_commit", "torch", "device_name")}
        snapshot = out / "suite.yaml"  # the suite the earlier cells ran under, rewritten below
        if snapshot.exists():
            # yaml round trip: the snapshot as it would be read back, so that only real differences count
            changed = suite_changes(yaml.safe_load(snapshot.read_text()),
                                    yaml.safe_load(yaml.safe_dump(resolved, sort_keys=False)))
            env["resumed_from"]["suite_changes"] = changed
            if changed:
                print(f"warning: resuming {out} with a suite that differs from the one its earlier cells ran under "
                      f"(the cells already measured are kept as they are): {', '.join(changed)}", file=sys.stderr)
    env_path.write_text(json.dumps(env, indent=2))
    (out / "suite.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    specs = {m.name: architectures.get_mixer(m.name).spec.as_dict()
             for m in resolve_mixers(suite, only) if not m.missing}
    (out / "specs.json").write_text(json.dumps(specs, indent=2, default=str))
    write_figures(out, suite, device, cells, specs)

    done = {r["cell_id"] for r in existing}
    failed_at: dict[tuple, tuple[int, str]] = {}  # series -> (seq_len, status) of the first OOM / timeout
    for r in existing:
        if r.get("status") in ("oom", "timeout"):
            series_cells = [c for c in cells if c.cell_id == r["cell_id"]]
            if series_cells:
                c = series_cells[0]
                if c.series not in failed_at or c.seq_len < failed_at[c.series][0]:
                    failed_at[c.series] = (c.seq_len, r["status"])

    ctx = RunContext(device=device, timing=suite.timing, matmul_peak=env["matmul_peak_flops"], out=out,
                     suite_dir=Path(suite_path).resolve().parent if suite_path else None)
    benches = {e.label: BENCHMARKS.get(e.kind)(e, suite, device) for e in suite.benchmarks}
    entries = {e.label: e for e in suite.benchmarks}
    summary = RunSummary(out=out, cells=len(cells), ran=0, reused=len([c for c in cells if c.cell_id in done]))
    todo = [c for c in cells if c.cell_id not in done]

    bar = _progress(len(cells), summary.reused, progress)
    try:
        for cell in todo:
            bar.set_description(f"{cell.mixer} {cell.mode} n={cell.seq_len}")
            torch.set_num_threads(threads_for(entries[cell.benchmark].cpu_threads))
            entry = entries[cell.benchmark]
            cell_ctx = dataclasses.replace(ctx, timing=entry.timing_for(suite.timing))
            rows = _run_one(cell, benches[cell.benchmark], cell_ctx, failed_at, suite)
            base = _row_base(run_id, suite, cell, device)
            full = [{**base, **row, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} for row in rows]
            append_rows(results_path, full)
            status = rows[0]["status"]
            summary.statuses[status] += 1
            summary.ran += 1
            if status in ("oom", "timeout") and cell.series not in failed_at:
                failed_at[cell.series] = (cell.seq_len, status)
            bar.update(1)
            bar.set_postfix({k: v for k, v in summary.statuses.items()}, refresh=False)
    finally:
        bar.close()
        torch.set_num_threads(default_threads)
        summary.seconds = time.perf_counter() - started
    if write_report:
        from .report.build import write_report

        write_report(out)
    return summary


def write_figures(out: Path, suite: Suite, device: torch.device, cells: list[Cell], specs: dict) -> None:
    """``OUT/figures.json``: what each benchmark entry's report shows that is not a measured cell
    (``Benchmark.run_figures``: computed from the planned cells and the specs now, so a report never builds a
    model)."""
    figures = {}
    for e in suite.benchmarks:
        mine = [c for c in cells if c.benchmark == e.label]
        figures[e.label] = BENCHMARKS.get(e.kind)(e, suite, device).run_figures(mine, specs, out)
    (out / "figures.json").write_text(json.dumps({k: v for k, v in figures.items() if v}, indent=1, default=str))


def _run_one(cell: Cell, bench, ctx: RunContext, failed_at: dict, suite: Suite) -> list[dict]:
    def failure(status: str, message: str) -> list[dict]:
        return [{"metric": None, "value": None, "unit": None, "status": status, "error": message}]

    if cell.missing:
        return failure("missing", f"mixer {cell.mixer_name!r} is not registered in this build")
    if cell.series in failed_at and cell.seq_len > failed_at[cell.series][0]:
        n, status = failed_at[cell.series]
        return failure("skipped", f"{status} at seq_len={n}; longer lengths of this series are not attempted")
    try:
        with time_budget(suite.time_budget_s):
            rows = bench.run_cell(cell, ctx)
        return [{**row, "status": "ok", "error": None} for row in rows]
    except SkipCell as err:
        return failure("skipped", str(err))
    except CellTimeout as err:
        return failure("timeout", str(err))
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # noqa: BLE001 - every failure of a cell is data
        if isinstance(err, (SystemExit, GeneratorExit)):
            raise
        status = "oom" if is_oom(err) else "error"
        tb = traceback.extract_tb(err.__traceback__)
        where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        return failure(status, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}{where}")
    finally:
        gc.collect()
        empty_cache(ctx.device)


class _NoBar:
    def set_description(self, *a, **k): ...
    def set_postfix(self, *a, **k): ...
    def update(self, *a, **k): ...
    def close(self): ...


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, unit="cell", file=sys.stderr, dynamic_ncols=True,
                mininterval=0.1 if tty else 10.0)
