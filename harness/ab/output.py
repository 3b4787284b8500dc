"""What ``harness ab`` writes to OUT: ``ab.md`` (the table, also printed), ``ab.json`` (settings, both sides'
commits and trees, every cell's verdict), ``measurements.jsonl`` (every measurement: round, side, position in the
pair, time, status, the side's commit, tree and the ``harness`` it imported) and, per side, ``<side>.json`` in
pytest-benchmark's storage format (one benchmark per cell, its per-round times as ``data``), so that
``pytest-benchmark compare --between median,min OUT/base.json OUT/head.json`` prints pytest-benchmark's own side by
side table of the two sides (pytest-benchmark computes the statistics: ``pytest_benchmark.stats.Stats``)."""
from __future__ import annotations

import dataclasses
import datetime
import json
import platform
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .run import ABResult

MARKS = {"slower": "**slower**", "faster": "faster", "same": "same", "failed": "failed"}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3g}"


def table(result: "ABResult") -> list[str]:
    s = result.settings
    lines = [f"| cell | base ms | head ms | head/base | {s.confidence:.0%} interval | verdict |",
             "|---|---:|---:|---:|---|---|"]
    for c in result.cells:
        ratio = "-" if c["ratio"] is None else f"{c['ratio']:.3f}"
        interval = "-" if c["low"] is None else f"{c['low']:.3f} - {c['high']:.3f}"
        mark = MARKS[c["verdict"]] + (" (flagged)" if c["flagged"] and c["verdict"] == "failed" else "")
        lines.append(f"| `{c['cell_id']}` | {_ms(c['base_s'])} | {_ms(c['head_s'])} | {ratio} | {interval} | "
                     f"{mark} |")
    return lines


def _side_line(side: dict) -> str:
    where = "checked out into a temporary worktree" if side["checked_out"] else f"the directory {side['tree']}"
    return f"`{side['spec']}` = {side['commit'] or '(not a git checkout)'}, {where}"


def markdown(result: "ABResult") -> str:
    s = result.settings
    b, h = result.base, result.head
    flagged = result.flagged
    head_line = (f"**{len(flagged)} flagged slowdown(s)**" if flagged else "no flagged slowdown")
    faster = [c["cell_id"] for c in result.cells if c["verdict"] == "faster"]
    lines = [f"# A/B: {h['spec']} against {b['spec']}", "",
             f"- base: {_side_line(b)}", f"- head: {_side_line(h)}",
             f"- suite: `{result.suite}` (resolved from the head side), {len(result.cells)} timed cells, "
             f"{s.rounds} rounds interleaved A B, B A, ..., device {s.device}",
             f"- rule: flagged when the median of the per-round ratios head/base exceeds {1 + s.threshold:g} and its "
             f"{s.confidence:.0%} sign-test interval lies above 1 (faster cells are listed, never flagged)",
             f"- result: {head_line}; {len(faster)} faster; {result.seconds:.0f} s wall clock on "
             f"{platform.node() or 'this machine'}", ""]
    lines += table(result)
    notes = [f"- `{c['cell_id']}`: {c['note']}" for c in result.cells if c["note"]] + [
        f"- {n}" for n in result.left_out]
    if notes:
        lines += ["", "Notes:", ""] + notes
    lines += ["", f"pytest-benchmark's view of the same measurements: `pytest-benchmark compare --between median,min "
                  f"{result.out}/base.json {result.out}/head.json`"]
    return "\n".join(lines) + "\n"


def pytest_benchmark_json(result: "ABResult", side: str) -> dict | None:
    """One side's measurements in pytest-benchmark's storage format, or None without pytest-benchmark."""
    try:
        from pytest_benchmark import __version__
        from pytest_benchmark.stats import Stats
    except ImportError:
        return None
    benchmarks = []
    for c in result.cells:
        times = [m["value"] for m in result.measurements
                 if m["cell_id"] == c["cell_id"] and m["side"] == side and m["status"] == "ok"]
        if not times:
            continue
        stats = Stats()
        for t in times:
            stats.update(t)
        group, _, name = c["cell_id"].partition("/")
        benchmarks.append({"group": group, "name": c["cell_id"], "fullname": c["cell_id"], "params": None,
                           "param": None, "extra_info": {"side": side, "verdict": c["verdict"]},
                           "options": {"rounds": result.settings.rounds, "timer": "harness.device.time_callable"},
                           "stats": {**stats.as_dict(), "data": times}})
    info = getattr(result, side)
    return {"machine_info": {"node": platform.node(), "machine": platform.machine(),
                             "python_version": platform.python_version()},
            "commit_info": {"id": info["commit"], "project": "transformer-bench", "spec": info["spec"]},
            "benchmarks": benchmarks, "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "version": __version__}


def write_outputs(result: "ABResult") -> None:
    out = result.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "ab.md").write_text(markdown(result))
    summary = {"base": result.base, "head": result.head, "suite": result.suite, "seconds": result.seconds,
               "settings": dataclasses.asdict(result.settings), "cells": result.cells,
               "flagged": [c["cell_id"] for c in result.flagged], "left_out": result.left_out}
    (out / "ab.json").write_text(json.dumps(summary, indent=1))
    (out / "measurements.jsonl").write_text("".join(json.dumps(m) + "\n" for m in result.measurements))
    for side in ("base", "head"):
        data = pytest_benchmark_json(result, side)
        if data is not None:
            (out / f"{side}.json").write_text(json.dumps(data, indent=1))
