"""No import cycle among the modules of `harness` and `architectures`, and every module imports on its own.

The check reads every ``import`` statement (top level and inside functions: a lazy import is still a dependency;
``if TYPE_CHECKING:`` blocks are annotations only), adds the implicit edges of Python's package machinery (importing
``a.b`` from outside ``a`` runs ``a/__init__``; a package that imports its submodules by discovery, ``pkgutil.iter_modules``, depends
on each of them; a module's imports from its own package are not edges: the package's ``__init__`` is already
running, as with ``from . import Benchmark`` in a kind discovered by ``harness.benchmarks``), and looks for strongly connected components. Our own ~40 lines rather than pydeps or
import-linter: they see neither function-level imports nor discovery, which is where our cycles were
(``harness.config`` <-> ``harness.benchmarks``), and they would add a dependency to the dev extra.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "architectures")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _targets(mod: str, path: Path, node: ast.AST, mods: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    if node.level:
        base = base[:len(base) - node.level + 1]
    prefix = ".".join(base + [node.module] if node.module else base) if node.level else node.module
    return [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix for a in node.names]


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        annotations_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                            and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in annotations_only:
                for t in _targets(mod, path, node, mods):
                    while t and t not in mods:
                        t = t.rpartition(".")[0]
                    if t and t != mod and not mod.startswith(t + "."):  # a module may use its own package
                        graph[mod].add(t)
                        # importing a.b.c from outside package a.b runs a.b's __init__ first
                        graph[mod] |= {p for p in _ancestors(t) if p in mods and not mod.startswith(p + ".")}
        if path.name == "__init__.py" and "iter_modules(__path__)" in path.read_text():
            graph[mod] |= {m for m in mods if m.rpartition(".")[0] == mod and not m.rpartition(".")[2].startswith("_")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, ("import cycles (a kind's report module must import RunData/BenchmarkEntry under "
                       f"TYPE_CHECKING; a registry check belongs in harness.suites): {found}")


def test_the_checker_sees_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert cycles(graph) == [["a", "b"]]
    assert "harness.benchmarks.scaling" in import_graph()["harness.benchmarks"]  # discovery is an edge


@pytest.mark.parametrize("module", ["harness.config", "harness.benchmarks", "harness.suites", "harness.claims",
                                    "harness.report.run", "harness.report.build", "harness.runner", "harness.cli"])
def test_imports_alone(module):
    """Each module imports first in a fresh interpreter (an order-dependent cycle would fail here)."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
