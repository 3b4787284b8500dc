"""Loading a suite file: its schema (``harness.config``) and then the registries (mixers, benchmark kinds and each
kind's ``params`` schema). This module sits above both ``harness.config`` and ``harness.benchmarks`` (which import
the schema), so that neither imports the other."""
from __future__ import annotations

import fnmatch
from pathlib import Path

import yaml
from pydantic import ValidationError

from .benchmarks import BENCHMARKS, validate_params
from .config import Suite, SuiteError, _describe, _field_path, _line, parse_suite, resolve_mixers


def load_suite(path: str | Path, *, check_registry: bool = True) -> tuple[Suite, dict]:
    """Parse and validate a suite file. Returns the model and the raw mapping; raises SuiteError."""
    suite, raw, root = parse_suite(path)
    if check_registry:
        problems = check_against_registries(suite, Path(path), root)
        if problems:
            raise SuiteError(problems)
    return suite, raw


def check_against_registries(suite: Suite, path: Path, root: yaml.Node | None) -> list[str]:
    problems = []
    try:
        resolve_mixers(suite)
    except ValueError as err:
        index = err.args[1] if len(err.args) > 1 else None
        loc = ("mixers", index) if index is not None else ("mixers",)
        problems.append(f"{path}:{_line(root, loc)}: {_field_path(loc)}: {err.args[0]}")
    try:
        resolved = resolve_mixers(suite)
    except ValueError:
        resolved = []
    for i, bench in enumerate(suite.benchmarks):
        for j, pattern in enumerate(bench.mixers or []):
            if resolved and not any(fnmatch.fnmatchcase(m.label, pattern) for m in resolved):
                loc = ("benchmarks", i, "mixers", j)
                problems.append(f"{path}:{_line(root, loc)}: {_field_path(loc)}: {pattern!r} matches none of the "
                                f"suite's mixers ({', '.join(m.label for m in resolved)})")
        loc = ("benchmarks", i, "kind")
        if bench.kind not in BENCHMARKS:
            from architectures.registry import UnknownNameError

            problems.append(f"{path}:{_line(root, loc)}: {_field_path(loc)}: "
                            f"{UnknownNameError('benchmark', bench.kind, BENCHMARKS.list())}")
            continue
        bench_cls = BENCHMARKS.get(bench.kind)
        bad_modes = [m for m in bench.modes if m not in bench_cls.modes]
        if bad_modes:
            loc = ("benchmarks", i, "modes")
            problems.append(f"{path}:{_line(root, loc)}: {_field_path(loc)}: unknown mode(s) {bad_modes} for "
                            f"benchmark kind {bench.kind!r}; expected some of {list(bench_cls.modes)}")
        try:
            validate_params(bench.kind, bench.params)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ("benchmarks", i, "params", *err["loc"])
                problems.append(f"{path}:{_line(root, loc)}: {_field_path(loc)}: {_describe(err)}")
    return problems
