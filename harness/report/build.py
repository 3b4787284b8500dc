"""``OUT/report.md`` (and ``report.html``) from a run directory, assembled from the sections of the benchmark kinds.

The report reads only the run directory (``RunData``). Its parts: the title and the suite's description, the
summary sections (kinds with ``report_summary``, e.g. the Master Comparison Table), the environment, the provenance
(which commit and device measured which cells, and every invocation of the run directory), the cells that
did not produce measurements, then one section per benchmark entry in suite order, written by the entry's kind
(``Benchmark.report_section``). A new kind brings its section with it; nothing here names a kind.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..benchmarks import BENCHMARKS
from ..env import invocation_history
from .markdown import md
from .run import RunData


def resume_command(run: RunData) -> str:
    """The command that completes this run: the suite by name when it is a shipped suite, else its file."""
    from ..env import data_dir

    source, name = run.resolved.get("source"), run.suite.suite
    if not source:
        return f"python -m harness run {name} --resume {run.out}"
    path = Path(source)  # recorded as given to `run` (a name resolves to the shipped file's absolute path)
    shipped = (path.name == f"{name}.yaml" and path.parent.name in ("suites", "_suites")
               and (data_dir("suites") / path.name).exists())
    return f"python -m harness run {name if shipped else source} --resume {run.out}"
    return f"python -m harness run {suite} --resume {run.out}"


def completeness(run: RunData) -> list[str]:
    """A notice at the top of an incomplete run's report: which entries still lack cells, and how to finish."""
    pending = run.pending()
    if not pending:
        return []
    planned = sum(len(ids) for ids in run.planned.values())
    which = ", ".join(f"`{label}` {n} of {len(run.planned[label])}" for label, n in pending.items())
    return [f"> **Incomplete run**: {sum(pending.values())} of {planned} planned cells have no result yet "
            f"({which}); the sections and claims below show only what was measured. Finish it with "
            f"`{resume_command(run)}`.", ""]


def environment(run: RunData) -> list[str]:
    table = pd.DataFrame([{"key": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v}
                          for k, v in run.env.items() if k != "invocations"])  # that one is a table of its own
    return ["## Environment", "", md(table), ""]


NOT_RECORDED = "not recorded"  # rows and env.json written before provenance was kept


def provenance(run: RunData) -> list[str]:
    """Which code and which machine measured the cells: a resumed run directory can hold cells of several
    invocations, commits and machines (each row records ``git_commit`` and ``device_name``; env.json lists every
    invocation)."""
    lines = ["## Provenance", ""]
    if not run.df.empty:
        first = run.df.drop_duplicates("cell_id")
        cols = {c: first[c] if c in first else pd.Series(None, index=first.index, dtype=object)
                for c in ("git_commit", "device_name", "time_utc")}
        cells = pd.DataFrame({"commit": cols["git_commit"].fillna(NOT_RECORDED),
                              "measured on": cols["device_name"].fillna(NOT_RECORDED), "time": cols["time_utc"]})
        by = cells.groupby(["commit", "measured on"], sort=False)["time"]
        table = by.agg(cells="size", first="min", last="max").reset_index().sort_values("first", na_position="first")
        lines += ["Cells by the commit that ran them and the device that measured them:", "", md(table), ""]
    invocations = invocation_history(run.env)
    if invocations:
        table = pd.DataFrame(invocations).reindex(columns=["time_utc", "git_commit", "device_name", "torch_threads",
                                                           "benchmarks", "cells", "suite_changes", "note"])
        table = table.dropna(axis=1, how="all").astype(object)
        lines += ["Invocations (the run and each `--resume`):", "", md(table.where(table.notna(), "")), ""]
    return lines if len(lines) > 2 else []


def cells(run: RunData) -> list[str]:
    df = run.df
    statuses = df["status"].value_counts().to_dict() if not df.empty else {}
    n_cells = df["cell_id"].nunique() if not df.empty else 0
    lines = ["## Cells", "", f"{n_cells} cells: " + ", ".join(f"{v} {k}" for k, v in sorted(statuses.items())) +
             " (rows; a measured cell has one row per metric)", ""]
    failed = df[df["status"] != "ok"] if not df.empty else df
    if not failed.empty:
        lines += ["Cells that did not produce measurements:", "",
                  md(failed[["benchmark", "mixer", "impl", "mode", "seq_len", "status", "error"]]), ""]
    return lines


def sections(run: RunData, summary: bool) -> list[str]:
    """The sections of the entries whose kind is (or is not) a summary, in suite order."""
    lines: list[str] = []
    for entry in run.suite.benchmarks:
        if entry.kind not in BENCHMARKS:
            if not summary:
                lines += [f"## Benchmark `{entry.label}` ({entry.kind})", "",
                          f"_(kind `{entry.kind}` is not registered in this build: no section)_", ""]
            continue
        kind = BENCHMARKS.get(entry.kind)
        if kind.report_summary == summary:
            lines += kind.report_section(run, entry)
    return lines


def markdown(run: RunData) -> str:
    lines = [f"# {run.suite.suite} report", ""]
    if run.suite.description:
        lines += [run.suite.description.strip(), ""]
    lines += completeness(run) + sections(run, summary=True) + environment(run) + provenance(run) + cells(run)
    lines += sections(run, summary=False)
    return "\n".join(lines)


FORMATS = ("md", "html")


def write_report(out: str | Path, formats: tuple[str, ...] = FORMATS) -> Path:
    """Write ``OUT/report.md`` with its plots under ``OUT/plots`` and, with "html", the self-contained
    ``OUT/report.html`` beside it (``harness.report.html``); returns the path of report.md."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown report format(s) {sorted(unknown)}; expected some of {list(FORMATS)}")
    run = RunData.load(out)
    text = markdown(run)
    path = run.out / "report.md"
    path.write_text(text)  # always: the plots and the HTML are made with it
    if "html" in formats:
        from .html import write_html

        write_html(run.out, text, f"{run.suite.suite} report")
    return path
