"""``run_ab``: the timed cells of a suite measured on two trees in interleaved rounds, and one verdict per cell.

    checkout_sides (trees.py) ─► a driver process per side (side.py / driver.py), started together, kept warm
       ─► the cells both sides planned whose kind is timed (``Benchmark.timed_metric``, read with this tree's code)
       ─► R rounds; in each, every cell is measured on both sides back to back: A B in even rounds, B A in odd
          ones (A B B A A B ...), so neither side always goes first; by default each round has a fresh process
          per side (a process's own bias becomes noise between rounds), which runs all of the round's cells
       ─► per cell, paired ratios HEAD/BASE over rounds, sign-test interval of their median, verdict (stats.py)
       ─► ab.md, ab.json, measurements.jsonl, pytest-benchmark JSON per side (output.py)
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .side import Side
from .stats import min_rounds, paired_ratio, verdict
from .trees import ABInputError, Tree, checkout_sides, suite_in


@dataclass(frozen=True)
class ABSettings:
    rounds: int = 6  # each a measurement of every cell on both sides (even: each side goes first in half)
    threshold: float = 0.05  # a slowdown is flagged only above 1 + threshold (and significant)
    confidence: float = 0.95  # of the interval of the median ratio (95% needs >= 6 rounds)
    device: str = "cpu"
    only: str | None = None  # glob over the suite's mixer labels/names (as `run --only`)
    threads: int | None = None  # overrides the suite's cpu_threads (as `run --threads`)
    repo: str | None = None  # the git repository revisions are looked up in (default: around the cwd)
    echo_stderr: bool = False  # the sides' stderr (warnings) on ours
    # a fresh process per side every round (True), or one per side for the whole run: a process carries a bias of
    # its own (same code, same machine: one process pair measured gla 8% apart over 4 rounds; docs/ab.md), which
    # only new processes turn into round-to-round noise that the interval sees
    fresh_processes: bool = True


@dataclass
class ABResult:
    out: Path
    base: dict
    head: dict
    settings: ABSettings
    suite: str
    cells: list[dict] = field(default_factory=list)  # one summary per cell, in plan order
    measurements: list[dict] = field(default_factory=list)  # every (round, side, cell) measurement
    left_out: list[str] = field(default_factory=list)  # why some planned cells are not compared
    seconds: float = 0.0

    @property
    def flagged(self) -> list[dict]:
        return [c for c in self.cells if c["flagged"]]


def timed_cells(suite_path: Path, device: str, only: str | None) -> tuple[dict[str, str], float]:
    """{cell_id: timed metric} of the suite (this tree's registry decides which kinds are timed), and its
    per-cell time budget. ABInputError if nothing in it is timed."""
    from ..device import resolve_device
    from ..runner import plan
    from ..suites import load_suite

    suite, _ = load_suite(suite_path)
    dev = resolve_device(device)
    from ..benchmarks import BENCHMARKS

    metrics = {e.label: BENCHMARKS.get(e.kind)(e, suite, dev).timed_metric() for e in suite.benchmarks}
    timed = {c.cell_id: metrics[c.benchmark] for c in plan(suite, dev, only) if metrics[c.benchmark]}
    if not timed:
        kinds = ", ".join(f"{e.label} ({e.kind})" for e in suite.benchmarks)
        raise ABInputError(f"{suite_path}: no timed cells to compare (entries: {kinds}); `harness ab` compares the "
                           "times of kinds such as scaling (with metrics: [time, ...]) and op_speed")
    return timed, suite.time_budget_s


def _setup(tree: Tree, suite_path: Path, settings: ABSettings, out: Path) -> dict:
    return {"suite_path": str(suite_path), "device": settings.device, "only": settings.only,
            "threads": settings.threads, "cpu_allocator": "caching", "plugins": (),
            "out": str(out / f"{tree.label}-files")}


def _start(trees: tuple[Tree, Tree], suite_path: Path, settings: ABSettings, out: Path,
           stack: contextlib.ExitStack) -> tuple[Side, Side]:
    """Both drivers spawned at once (each imports torch and plans the suite), then awaited."""
    sides = tuple(Side(t, _setup(t, suite_path, settings, out), settings.echo_stderr) for t in trees)
    for side in sides:
        stack.callback(side.close)
        side.spawn()
    for side in sides:
        side.wait_ready()
    return sides


def _common(sides: tuple[Side, Side], timed: dict[str, str]) -> tuple[list[str], list[str]]:
    """The timed cells both sides planned (HEAD's order), and a note per cell only one side has."""
    base_ids = [c["cell_id"] for c in sides[0].info["cells"]]
    head_ids = [c["cell_id"] for c in sides[1].info["cells"]]
    common = [c for c in head_ids if c in timed and c in set(base_ids)]
    notes = [f"{c}: only in {side} (not compared)" for side, ids, other in (("base", base_ids, head_ids),
                                                                            ("head", head_ids, base_ids))
             for c in ids if c in timed and c not in set(other)]
    return common, notes


def _measurement(side: Side, rnd: int, position: int, cell_id: str, metric: str, rows: list[dict]) -> dict:
    """One side's time of one cell in one round (or its failure), with where the code came from."""
    row = next((r for r in rows if r.get("metric") == metric and r.get("status") == "ok"), None)
    if row is not None:
        status, error = "ok", None
    elif rows and rows[0].get("status") != "ok":  # the cell failed: its one row says how
        status, error = rows[0].get("status"), rows[0].get("error")
    else:
        status, error = "untimed", f"the cell returned no {metric!r} row"
    row = row or {}
    return {"round": rnd, "position": position, "side": side.tree.label, "cell_id": cell_id, "status": status,
            "value": row.get("value"), "unit": "s", "error": error, "q1_s": row.get("q1_s"),
            "q3_s": row.get("q3_s"), "repeats": row.get("repeats"), "commit": side.tree.commit,
            "tree": str(side.tree.root), "harness": side.info.get("harness"),
            "pid": side.worker.proc.pid if side.worker else None}


def _restart(sides: tuple[Side, Side]) -> None:
    """A fresh process per side (both spawned before either is awaited: they import in parallel)."""
    for side in sides:
        side.close()
        side.spawn()
    for side in sides:
        side.wait_ready()


def _rounds(sides: tuple[Side, Side], cells: list[str], timed: dict[str, str], settings: ABSettings,
            budget_s: float, progress: bool) -> list[dict]:
    measurements, rounds = [], settings.rounds
    for rnd in range(rounds):
        started = time.perf_counter()
        if rnd and settings.fresh_processes:
            _restart(sides)
        order = sides if rnd % 2 == 0 else sides[::-1]  # A B, B A, A B, ...
        for cell_id in cells:
            for position, side in enumerate(order):
                rows = side.measure(cell_id, budget_s)
                measurements.append(_measurement(side, rnd, position, cell_id, timed[cell_id], rows))
        if progress:
            print(f"round {rnd + 1}/{rounds}: {len(cells)} cells x 2 sides in {time.perf_counter() - started:.0f} s"
                  f" ({'/'.join(s.tree.label for s in order)} first; load average {os.getloadavg()[0]:.1f})",
                  file=sys.stderr, flush=True)
    return measurements


def summarize(cell_id: str, measurements: list[dict], settings: ABSettings) -> dict:
    """One cell's verdict: ``slower`` (flagged), ``faster``, ``same``, or ``failed`` (flagged when only HEAD fails)."""
    mine = [m for m in measurements if m["cell_id"] == cell_id]
    by_round: dict[int, dict[str, dict]] = {}
    for m in mine:
        by_round.setdefault(m["round"], {})[m["side"]] = m
    pairs = [(r["base"]["value"], r["head"]["value"]) for r in by_round.values()
             if r["base"]["status"] == "ok" and r["head"]["status"] == "ok"]
    failed = {s: next((m for m in mine if m["side"] == s and m["status"] != "ok"), None) for s in ("base", "head")}
    summary = {"cell_id": cell_id, "rounds": len(pairs),
               "base_s": _median([m["value"] for m in mine if m["side"] == "base" and m["status"] == "ok"]),
               "head_s": _median([m["value"] for m in mine if m["side"] == "head" and m["status"] == "ok"])}
    if failed["base"] or failed["head"]:
        where = [f"{s}: {f['status']} ({f['error']})" for s, f in failed.items() if f]
        return {**summary, "verdict": "failed", "flagged": bool(failed["head"] and not failed["base"]),
                "ratio": None, "low": None, "high": None, "note": "; ".join(where)}
    r = paired_ratio([b for b, _ in pairs], [h for _, h in pairs], settings.confidence)
    v = verdict(r, settings.threshold)
    return {**summary, "verdict": v, "flagged": v == "slower", "ratio": r.ratio, "low": r.low, "high": r.high,
            "coverage": r.coverage, "note": None}


def _median(values: list[float]) -> float | None:
    import statistics

    return statistics.median(values) if values else None


def _side_info(side: Side) -> dict:
    t = side.tree
    return {"spec": t.spec, "commit": t.commit, "tree": str(t.root), "checked_out": t.worktree,
            "harness": side.info.get("harness"), "architectures": side.info.get("architectures"),
            "processes_started": side.started}


def run_ab(base: str, head: str, suite: str, out: Path, settings: ABSettings = ABSettings(),
           progress: bool = True) -> ABResult:
    """Measure, decide and write OUT/ab.md, ab.json, measurements.jsonl and the pytest-benchmark files."""
    from .output import write_outputs

    needed = min_rounds(settings.confidence)
    if settings.rounds < needed:
        raise ABInputError(f"--rounds {settings.rounds} is too few for a {settings.confidence:.0%} interval of the "
                           f"median (it needs at least {needed} rounds); raise --rounds or lower --confidence")
    started = time.perf_counter()
    out = Path(out)
    with checkout_sides(base, head, settings.repo) as trees, contextlib.ExitStack() as stack:
        suite_path = suite_in(trees[1], suite)
        timed, budget_s = timed_cells(suite_path, settings.device, settings.only)
        out.mkdir(parents=True, exist_ok=True)
        sides = _start(trees, suite_path, settings, out, stack)
        cells, left_out = _common(sides, timed)
        if not cells:
            raise ABInputError(f"no timed cell of {suite_path} is planned by both sides: " + "; ".join(left_out))
        measurements = _rounds(sides, cells, timed, settings, budget_s, progress)
        shown = suite_path.relative_to(trees[1].root) if suite_path.is_relative_to(trees[1].root) else suite_path
        result = ABResult(out, _side_info(sides[0]), _side_info(sides[1]), settings, str(shown),
                          [summarize(c, measurements, settings) for c in cells], measurements, left_out)
    result.seconds = time.perf_counter() - started
    write_outputs(result)
    return result
