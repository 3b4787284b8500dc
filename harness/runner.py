"""The runner: suite -> grid of cells -> an executor measures them -> ``OUT/results.jsonl`` (a journal) -> report.

A cell never takes the run down: its exception becomes a row with status ``error``, an out-of-memory ``oom``, a
cell over the suite's ``time_budget_s`` ``timeout``, a worker that dies under it ``crashed`` (isolated and ray
executors, see ``harness.executors``), and a ``SkipCell`` ``skipped`` with its reason. After an OOM or a timeout at
length n, the longer lengths of the same series are recorded as ``skipped`` without running. Each cell's rows are
committed atomically (``harness.results``); ``resume=True`` sets a torn tail aside and reruns only the cells that
have no committed rows. ``OUT/.lock`` keeps a second run out of a directory in use (``harness.lock``).
"""
from __future__ import annotations

import errno
import fnmatch
import json
import re
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

import architectures

from .benchmarks import BENCHMARKS, Cell
from .config import Suite, resolve_mixers
from .device import configure_cpu_allocator, cpu_memory_cap
from .env import INVOCATION_KEYS, collect_env, git_commit, invocation_history
from .executors import ExecutorError, Job, Setup, load_plugins, make_executor
from .executors.cell import CellTimeout, failure, time_budget  # noqa: F401 - re-exported
from . import partial
from .lock import LockHeld, RunLock
from .measure import measure_matmul_peak
from .results import commit_cell, read_journal, retract_cells, set_aside_torn_tail, start_journal


WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR)


class RunError(Exception):
    """A run that cannot start (results already in the output directory without --resume, duplicate cells, the
    directory in use by another run, an output directory that cannot be written)."""


@dataclass
class RunSummary:
    out: Path
    cells: int
    ran: int
    reused: int
    statuses: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    executor: str = "inline"


def select_entries(suite: Suite, benchmarks: str | None) -> list:
    """The suite's benchmark entries whose label matches one of the comma-separated globs (all when None)."""
    if not benchmarks:
        return list(suite.benchmarks)
    globs = [g.strip() for g in benchmarks.split(",") if g.strip()]
    chosen = [e for e in suite.benchmarks if any(fnmatch.fnmatchcase(e.label, g) for g in globs)]
    if not chosen:
        raise RunError(f"--benchmarks {benchmarks!r} matches none of the suite's entries: "
                       f"{', '.join(e.label for e in suite.benchmarks)}")
    return chosen


def cell_glob(pattern: str) -> re.Pattern:
    """A glob over cell ids: * and ? are wildcards, everything else literal (cell ids hold brackets:
    "perplexity/mamba[torch]/train/...")."""
    return re.compile("".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern))


def select_cells(cells: list[Cell], globs: str) -> list[Cell]:
    """``--cells``: the cells whose id matches one of the comma-separated globs, in plan order."""
    patterns = [cell_glob(g.strip()) for g in globs.split(",") if g.strip()]
    chosen = [c for c in cells if any(p.fullmatch(c.cell_id) for p in patterns)]
    if not chosen:
        raise RunError(f"--cells {globs!r} matches none of the {len(cells)} planned cells (globs over cell ids with * "
                       f"and ?, e.g. 'mqar/*/n=64/*'; `run --dry-run` lists them)")
    return chosen


def plan(suite: Suite, device: torch.device, only: str | None = None, benchmarks: str | None = None,
         cells_glob: str | None = None) -> list[Cell]:
    """The suite's cells, in suite order: ``only`` filters mixers (a glob), ``benchmarks`` entries (globs over labels,
    comma-separated), ``cells_glob`` cells (globs over cell ids, comma-separated): the rest of a suite can follow with
    ``--resume`` and no filter."""
    mixers = resolve_mixers(suite, only)
    cells: list[Cell] = []
    for entry in select_entries(suite, benchmarks):
        bench = BENCHMARKS.get(entry.kind)(entry, suite, device)
        cells.extend(bench.cells(mixers))
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        raise RunError("the suite expands to duplicate cells (a repeated value in a sweep?)")
    return select_cells(cells, cells_glob) if cells_glob else cells


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


def _row_base(env: dict, suite: Suite, cell: Cell, device: torch.device, threads: int) -> dict:
    # git_commit: the code this invocation ran (a resumed run's cells may come from several; the report's provenance)
    return {"run_id": env["run_id"], "git_commit": env["git_commit"], "suite": suite.suite, "cell_id": cell.cell_id,
            **cell.fields(), "device": str(device), "threads": threads}


def run_suite(suite: Suite, out: Path, device: torch.device, *, suite_path: Path | None = None,
              only: str | None = None, benchmarks: str | None = None, resume: bool = False, progress: bool = True,
              write_report: bool = True, cpu_allocator: str = "caching",
              threads: int | None = None, cpu_memory_fraction: float | None = 0.9,
              executor: str = "inline", executor_options: dict | None = None, rerun: str | None = None,
              cells_glob: str | None = None) -> RunSummary:
    """Run every planned cell not yet committed in OUT/results.jsonl. ``threads`` (CPU) overrides the suite's
    ``timing.cpu_threads``; the thread count that ran is in env.json and in every row. On CPU the process's
    address space is capped at ``cpu_memory_fraction`` of physical memory while the cells run (``oom`` cells
    instead of the kernel's OOM killer; None or 0: no cap); workers inherit the cap. ``executor``: inline (this
    library call's default: what the measurement tests use), isolated (the CLI's default) or ray. ``rerun`` (with
    ``resume``): a glob over cell ids; the committed cells it matches are withdrawn and measured again. ``cells_glob``:
    run only the planned cells whose id matches (comma-separated globs); the others stay in plan.json for a later
    ``resume``."""
    if rerun and not resume:
        raise RunError("--rerun withdraws cells of an existing run: use it with --resume OUT")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "plots").mkdir(exist_ok=True)
        lock = RunLock(out).acquire()
    except LockHeld as err:
        raise RunError(str(err)) from None
    except OSError as err:
        raise RunError(f"cannot write to the output directory {out}: {err.strerror or err}") from None
    try:
        if lock.stale:
            print(f"note: {out} had a stale lock of pid {lock.stale.get('pid')} on {lock.stale.get('host')} "
                  f"(that run is gone); taking it over", file=sys.stderr)
        with cpu_memory_cap(cpu_memory_fraction if device.type == "cpu" else None) as memory_cap:
            return _run_suite(suite, out, device, suite_path=suite_path, only=only, benchmarks=benchmarks,
                              resume=resume,
                              progress=progress, write_report=write_report, cpu_allocator=cpu_allocator,
                              threads=threads, memory_cap=memory_cap, executor=executor,
                              executor_options=executor_options or {}, rerun=rerun, cells_glob=cells_glob)
    except ExecutorError as err:
        raise RunError(str(err)) from None
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        raise RunError(f"cannot write the run's files in {out}: {err.strerror or err}"
                       + (f" ({err.filename})" if err.filename else "")) from None
    finally:
        lock.release()


def _open_journal(out: Path, resume: bool) -> set[str]:
    """The committed cells of OUT/results.jsonl; with ``resume``, a torn tail is set aside first (warning)."""
    results_path = out / "results.jsonl"
    journal = read_journal(results_path)
    if (journal.rows or journal.torn.strip()) and not resume:
        raise RunError(f"{out} already holds results; pass --resume to complete that run, or choose another --out")
    aside = set_aside_torn_tail(results_path, journal) if results_path.exists() else None
    if aside:
        print(f"warning: {results_path} ended in a torn write ({len(journal.torn)} bytes: a cell cut off while "
              f"being recorded); moved it to {aside.name}; that cell runs again", file=sys.stderr)
    if journal.orphans:
        print(f"warning: {results_path} holds {journal.orphans} line(s) that no commit marker covers (edited or "
              f"damaged in the middle); they are ignored and their cells run again", file=sys.stderr)
    start_journal(results_path)
    return journal.cells


def _withdraw(results_path: Path, cells: list[Cell], done: set[str], pattern: str) -> set[str]:
    """``--rerun``: withdraw the committed cells of the plan whose id matches the glob, so that they run again."""
    regex = cell_glob(pattern)
    chosen = [c.cell_id for c in cells if c.cell_id in done and regex.fullmatch(c.cell_id)]
    if not chosen:
        raise RunError(f"--rerun {pattern!r} matches no committed cell of this run's plan (a glob over cell ids with * "
                       f"and ?, e.g. 'perplexity/mamba[*'; `run --dry-run` lists them)")
    retract_cells(results_path, chosen, f"--rerun {pattern} at {git_commit() or 'an unknown commit'}, "
                                        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    print(f"note: {len(chosen)} committed cell(s) withdrawn to be measured again (--rerun {pattern}); their old rows "
          f"stay in results.jsonl, marked as withdrawn", file=sys.stderr)
    return done - set(chosen)


def _write_run_files(suite: Suite, out: Path, device: torch.device, cells: list[Cell], *, suite_path, only,
                     benchmarks: str | None, cells_glob: str | None, resume: bool, cpu_allocator: str,
                     memory_cap: str) -> dict:
    """env.json, suite.yaml and specs.json; returns env (with run_id and the matmul peaks)."""
    env_path = out / "env.json"
    old_env = json.loads(env_path.read_text()) if resume and env_path.exists() else {}
    run_id = old_env.get("run_id") or f"{suite.suite}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    allocator = configure_cpu_allocator(cpu_allocator) if device.type == "cpu" else "cuda caching allocator"
    env = {"run_id": run_id, **collect_env(device, run_dir=out), "allocator": allocator, "memory_cap": memory_cap,
           "matmul_peak_flops": _matmul_peaks(cells, device, old_env.get("matmul_peak_flops"))}
    resolved = {"source": str(suite_path) if suite_path else None, "device": str(device), "only": only,
                "benchmarks": benchmarks, "cells": cells_glob,
                "mixers": [m.model_dump() for m in resolve_mixers(suite, only)],
                "suite": suite.model_dump(mode="json")}
    invocation = {k: env.get(k) for k in INVOCATION_KEYS} | {"benchmarks": benchmarks, "cells": cells_glob}
    if old_env:
        env["resumed_from"] = {k: old_env.get(k) for k in ("time_utc", "git_commit", "torch", "device_name")}
        changed = _changes_since(out / "suite.yaml", resolved, out)  # the snapshot is rewritten below
        env["resumed_from"]["suite_changes"] = invocation["suite_changes"] = changed
    env["invocations"] = invocation_history(old_env) + [invocation]
    env_path.write_text(json.dumps(env, indent=2))
    (out / "suite.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    # --benchmarks and --cells defer cells to a later --resume, they never drop them
    everything = plan(suite, device, only) if benchmarks or cells_glob else cells
    write_plan(out, everything)
    specs = {m.name: architectures.get_mixer(m.name).spec.as_dict()
             for m in resolve_mixers(suite, only) if not m.missing}
    (out / "specs.json").write_text(json.dumps(specs, indent=2, default=str))
    write_figures(out, suite, device, everything, specs)
    return env


def _changes_since(snapshot: Path, resolved: dict, out: Path) -> list[str]:
    """What differs between the suite the earlier cells ran under (``snapshot``, rewritten after this) and this
    invocation's, printed as a warning. Not compared: ``--benchmarks`` and ``--cells`` (which cells an invocation
    runs, not how a cell is measured) and the suite file's path (``source``: the same suite read from another
    checkout or copy is the same suite; what it says is compared under ``suite``)."""
    if not snapshot.exists():
        return []
    not_compared = ("benchmarks", "cells", "source")
    before = yaml.safe_load(snapshot.read_text())
    now = yaml.safe_load(yaml.safe_dump(resolved, sort_keys=False))  # as it will be read back: only real changes
    changed = suite_changes({k: v for k, v in before.items() if k not in not_compared},
                            {k: v for k, v in now.items() if k not in not_compared})
    if changed:
        print(f"warning: resuming {out} with a suite that differs from the one its earlier cells ran under "
              f"(the cells already measured are kept as they are): {', '.join(changed)}", file=sys.stderr)
    return changed


def write_plan(out: Path, cells: list[Cell]) -> None:
    """``OUT/plan.json``: entry label -> the ids of the cells this run directory is meant to hold (the whole suite
    with ``--only`` applied: ``--benchmarks`` and ``--cells`` defer cells to a later ``--resume``, they do not drop
    them), so that a report can say which cells have no result yet."""
    planned: dict[str, list[str]] = {}
    for c in cells:
        planned.setdefault(c.benchmark, []).append(c.cell_id)
    (out / "plan.json").write_text(json.dumps({"cells": planned}, indent=0))


def pending_cells(out: Path) -> dict[str, int]:
    """Entry label -> planned cells of OUT/plan.json without a committed result (entries with none missing left
    out; {} without a plan.json)."""
    path = Path(out) / "plan.json"
    if not path.exists():
        return {}
    done = read_journal(Path(out) / "results.jsonl").cells
    planned = json.loads(path.read_text()).get("cells", {})
    missing = {label: sum(1 for c in ids if c not in done) for label, ids in planned.items()}
    return {label: n for label, n in missing.items() if n}


def write_figures(out: Path, suite: Suite, device: torch.device, cells: list[Cell], specs: dict) -> None:
    """``OUT/figures.json``: what each benchmark entry's report shows that is not a measured cell
    (``Benchmark.run_figures``: computed from the planned cells and the specs now, so a report never builds a
    model)."""
    figures = {}
    for e in suite.benchmarks:
        mine = [c for c in cells if c.benchmark == e.label]
        figures[e.label] = BENCHMARKS.get(e.kind)(e, suite, device).run_figures(mine, specs, out)
    (out / "figures.json").write_text(json.dumps({k: v for k, v in figures.items() if v}, indent=1, default=str))


def _failed_series(cells: list[Cell], rows: list[dict]) -> dict[tuple, tuple[int, str]]:
    """series -> (seq_len, status) of the first OOM / timeout among committed rows."""
    by_id = {c.cell_id: c for c in cells}
    failed_at: dict[tuple, tuple[int, str]] = {}
    for r in rows:
        c = by_id.get(r.get("cell_id"))
        if c is not None and r.get("status") in ("oom", "timeout"):
            if c.series not in failed_at or c.seq_len < failed_at[c.series][0]:
                failed_at[c.series] = (c.seq_len, r["status"])
    return failed_at


def _run_suite(suite: Suite, out: Path, device: torch.device, *, suite_path: Path | None, only: str | None,
               benchmarks: str | None, resume: bool, progress: bool, write_report: bool, cpu_allocator: str, threads: int | None,
               memory_cap: str, executor: str, executor_options: dict, rerun: str | None = None,
               cells_glob: str | None = None) -> RunSummary:
    started = time.perf_counter()
    results_path = out / "results.jsonl"
    cells = plan(suite, device, only, benchmarks, cells_glob)
    done = _open_journal(out, resume)
    if rerun:
        done = _withdraw(results_path, cells, done, rerun)
    default_threads = torch.get_num_threads()

    def threads_for(entry_threads) -> int:
        """--threads, else the entry's cpu_threads, else the suite's timing.cpu_threads, else torch's default."""
        if device.type != "cpu":
            return default_threads
        chosen = threads or entry_threads or suite.timing.cpu_threads or "all"
        return default_threads if chosen == "all" else chosen

    torch.set_num_threads(threads_for(None))
    env = _write_run_files(suite, out, device, cells, suite_path=suite_path, only=only, benchmarks=benchmarks,
                           cells_glob=cells_glob, resume=resume,
                           cpu_allocator=cpu_allocator, memory_cap=memory_cap)
    failed_at = _failed_series(cells, read_journal(results_path).rows)
    entries = {e.label: e for e in suite.benchmarks}
    summary = RunSummary(out=out, cells=len(cells), ran=0, reused=len([c for c in cells if c.cell_id in done]),
                         executor=executor)
    todo = [c for c in cells if c.cell_id not in done]
    jobs = [Job(cell=c, timing=entries[c.benchmark].timing_for(suite.timing),
                threads=threads_for(entries[c.benchmark].cpu_threads), budget_s=suite.time_budget_s, index=i)
            for i, c in enumerate(todo)]
    setup = Setup(suite=suite, device=device, matmul_peak=env["matmul_peak_flops"], out=out.resolve(),
                  suite_dir=Path(suite_path).resolve().parent if suite_path else None, cpu_allocator=cpu_allocator,
                  plugins=_plugin_modules(suite, only))
    engine = make_executor(executor, **executor_options)
    bar = _progress(len(cells), summary.reused, progress)
    try:
        engine.start(setup)
        for job, rows in _schedule(jobs, engine, failed_at):
            cell = job.cell
            bar.set_description(f"{cell.mixer} {cell.mode} n={cell.seq_len}")
            base = _row_base(env, suite, cell, device, job.threads)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            commit_cell(results_path, cell.cell_id, [{**base, **row, "time_utc": stamp} for row in rows])
            status = rows[0]["status"]
            if status == "ok":
                partial.clear(out, cell.cell_id)  # its kept trainings (harness.partial) are in the journal now
            summary.statuses[status] += 1
            summary.ran += 1
            if status in ("oom", "timeout") and cell.series not in failed_at:
                failed_at[cell.series] = (cell.seq_len, status)
            bar.update(1)
            bar.set_postfix({k: v for k, v in summary.statuses.items()}, refresh=False)
    finally:
        engine.close()
        bar.close()
        torch.set_num_threads(default_threads)
        summary.seconds = time.perf_counter() - started
    if write_report:
        from .report.build import write_report

        write_report(out)
    return summary


def _plugin_modules(suite: Suite, only: str | None) -> tuple[str, ...]:
    """Modules a worker imports before its first cell: $HARNESS_PLUGINS (--plugin), and the modules that define the
    suite's mixers and benchmark kinds when they live outside the packages a worker imports anyway (a mixer
    registered by a plugin or a test module then exists inside the worker too)."""
    classes = [architectures.get_mixer(m.name) for m in resolve_mixers(suite, only) if not m.missing]
    classes += [BENCHMARKS.get(e.kind) for e in suite.benchmarks]
    found = [c.__module__ for c in classes
             if not c.__module__.startswith(("architectures.", "harness.")) and c.__module__ != "__main__"]
    return tuple(dict.fromkeys([*load_plugins(), *found]))


def _decided(cell: Cell, failed_at: dict) -> list[dict] | None:
    """The rows of a cell that is not run (its mixer missing, a shorter length of its series failed), else None."""
    if cell.missing:
        return failure("missing", f"mixer {cell.mixer_name!r} is not registered in this build")
    if cell.series in failed_at and cell.seq_len > failed_at[cell.series][0]:
        n, status = failed_at[cell.series]
        return failure("skipped", f"{status} at seq_len={n}; longer lengths of this series are not attempted")
    return None


def _schedule(jobs: list[Job], engine, failed_at: dict):
    """Yield (job, rows) as cells finish. The cells of one series (lengths of one mixer/mode/...) run one after the
    other in ascending length, so that an OOM or timeout at n skips the longer ones; up to ``engine.slots`` series
    are in flight at once (1: plan order exactly)."""
    queues: dict[tuple, list[Job]] = {}
    for job in jobs:
        queues.setdefault(job.cell.series, []).append(job)
    busy: set[tuple] = set()
    while queues or busy:
        free = [s for s in queues if s not in busy]
        if free and len(busy) < engine.slots:
            series = free[0]  # the earliest series in plan order that has nothing in flight
            job = queues[series].pop(0)
            if not queues[series]:
                del queues[series]
            rows = _decided(job.cell, failed_at)
            if rows is not None:
                yield job, rows
            else:
                engine.submit(job)
                busy.add(series)
            continue
        job, rows = engine.wait()
        busy.discard(job.cell.series)
        yield job, rows


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
