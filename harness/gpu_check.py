"""The report of ``scripts/gpu_check.sh``: one markdown page saying what ran on a GPU and what could not, and why.

The script runs the steps (``pytest -m cuda``, the smoke suite and ``suites/gpu_check.yaml`` with ``--device cuda``)
and then calls ``python -m harness.gpu_check``, which reads what they left in the work directory:

- ``steps.tsv``: one line per step, ``name<TAB>exit code<TAB>seconds<TAB>note``;
- ``cuda-tests.xml``: pytest's JUnit XML of the tests marked ``cuda``;
- each suite's run directory (``results.jsonl``).

Every cell the suite plans for CUDA gets a line: its status and reason from the run, ``skipped`` with the machine's
reason when there is no usable GPU (nothing was run), or ``missing`` when the run stopped before it (a step that
timed out or crashed). The check passes (exit 0) when no test failed, no step failed and every cell is ``ok`` or
``skipped`` with its reason; on a machine without CUDA that is every cell skipped and every CUDA test skipped.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from .suites import load_suite
from .device import cuda_status
from .env import git_commit
from .runner import plan

OK_STATUSES = ("ok", "skipped")


def read_steps(path: Path) -> list[dict]:
    """``steps.tsv`` written by the script: name, exit code, seconds, note."""
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        name, rc, seconds, note = (line.split("\t") + ["", "", ""])[:4]
        steps.append({"step": name, "rc": int(rc), "seconds": float(seconds or 0), "note": note})
    return steps


def junit_cases(path: Path) -> list[dict]:
    """Test cases of a JUnit XML file: name, status (passed / skipped / failed / error), reason."""
    if not path.exists():
        return []
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        status, reason = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                status = {"failure": "failed"}.get(tag, tag)
                reason = (node.get("message") or node.text or "").strip()
                break
        module = case.get("classname", "").rsplit(".", 1)[-1]
        cases.append({"test": f"{module}::{case.get('name')}", "status": status,
                      "reason": reason.splitlines()[0] if reason else ""})
    return cases


def cell_rows(suite_path: Path, run_dir: Path | None, no_cuda_reason: str | None, stopped: str | None) -> list[dict]:
    """One row per cell the suite plans on CUDA, with the status the run recorded for it."""
    suite, _ = load_suite(suite_path)
    recorded: dict[str, dict] = {}
    results = run_dir / "results.jsonl" if run_dir else None
    if results and results.exists():
        for line in results.read_text().splitlines():
            row = json.loads(line)
            first = recorded.setdefault(row["cell_id"], row)
            if row.get("metric") == "time_s" and row.get("status") == "ok":
                first["time_s"] = row["value"]
    rows = []
    for cell in plan(suite, torch.device("cuda")):
        got = recorded.get(cell.cell_id)
        if got is not None:
            status, reason = got["status"], got.get("error") or ""
        elif no_cuda_reason:
            status, reason = "skipped", f"no CUDA: {no_cuda_reason}"
        else:
            status, reason = "missing", stopped or "not in the run's results"
        rows.append({"benchmark": cell.benchmark, "mixer": cell.mixer, "impl": cell.impl, "mode": cell.mode,
                     "n": cell.seq_len, "dtype": cell.dtype, "status": status,
                     "kernel": (got or {}).get("sdpa_backend") or "",
                     "time_ms": got["time_s"] * 1e3 if got and got.get("time_s") is not None else None,
                     "reason": reason.splitlines()[0] if reason else ""})
    return rows


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        values = []
        for c in columns:
            v = r.get(c)
            values.append("" if v is None else f"{v:.3f}" if c == "time_ms" else _cell(v))
        lines.append("| " + " | ".join(values) + " |")
    return lines


def _counts(rows: list[dict]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def render(status: dict, steps: list[dict], tests: list[dict], suites: dict[str, list[dict]]) -> tuple[str, bool]:
    """The markdown page and whether the check passed."""
    bad_tests = [t for t in tests if t["status"] in ("failed", "error")]
    bad_cells = [r for rows in suites.values() for r in rows if r["status"] not in OK_STATUSES]
    bad_steps = [s for s in steps if s["rc"] != 0]
    passed = not (bad_tests or bad_cells or bad_steps)
    gpu = status["gpu"] or "no GPU"
    lines = [f"# GPU check: {gpu}", "",
             f"**{'PASS' if passed else 'FAIL'}**: {len(bad_tests)} CUDA tests failed, {len(bad_cells)} cells neither "
             f"ok nor skipped, {len(bad_steps)} steps failed.", "",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {git_commit() or 'unknown'}",
             f"- torch {status['torch']}, CUDA build {status['cuda_build']}, cuDNN {status['cudnn']}",
             f"- GPU: {gpu}" + (f" (capability {status['capability']}, {status['memory_bytes'] / 2**30:.0f} GiB, "
                               f"{status['gpu_count']} visible)" if status["available"] else
                               f": {status['reason']}; every CUDA cell below is skipped with that reason"), ""]
    if steps:
        lines += ["## Steps", ""] + _table(steps, ["step", "rc", "seconds", "note"]) + [""]
    lines += ["## CUDA tests (`pytest -m cuda`)", "", f"{len(tests)} tests: {_counts(tests)}.", ""]
    if tests:
        lines += _table(tests, ["test", "status", "reason"]) + [""]
    for name, rows in suites.items():
        lines += [f"## Cells: {name}", "", f"{len(rows)} cells: {_counts(rows)}. `time_ms`: median of one call; "
                  "`kernel`: the SDPA kernel that ran.", ""]
        lines += _table(rows, ["benchmark", "mixer", "impl", "mode", "n", "dtype", "status", "kernel", "time_ms",
                               "reason"]) + [""]
    return "\n".join(lines), passed


def report_path(out: Path, status: dict) -> Path:
    """``out`` itself when it names a .md file, else ``out/gpu-check-<gpu>.md`` (e.g. gpu-check-nvidia-h200.md)."""
    if out.suffix == ".md":
        return out
    slug = re.sub(r"[^a-z0-9]+", "-", (status["gpu"] or "no-gpu").lower()).strip("-")
    return out / f"gpu-check-{slug}.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("work", type=Path, help="the script's work directory (steps.tsv, cuda-tests.xml, run dirs)")
    p.add_argument("out", type=Path, help="the report: a .md path, or a directory for gpu-check-<gpu>.md")
    p.add_argument("--suite", action="append", default=[], metavar="SUITE=RUN_DIR",
                   help="a suite file and the run directory its --device cuda run wrote (repeatable)")
    args = p.parse_args(argv)
    status = cuda_status()
    steps = read_steps(args.work / "steps.tsv")
    stopped = {s["step"]: f"the `{s['step']}` step stopped (exit {s['rc']}): {s['note']}" for s in steps if s["rc"]}
    suites = {}
    for item in args.suite:
        suite_path, _, run_dir = item.partition("=")
        name = Path(suite_path).stem
        suites[name] = cell_rows(Path(suite_path), Path(run_dir) if run_dir else None, status["reason"],
                                 stopped.get(name))
    text, passed = render(status, steps, junit_cases(args.work / "cuda-tests.xml"), suites)
    dest = report_path(args.out, status)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text + "\n")
    print(f"gpu check: {'PASS' if passed else 'FAIL'}; report: {dest}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
