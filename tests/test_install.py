"""A wheel installed into a fresh virtual environment works away from the source tree: `transformer-bench
--version`, `list suites` (the suites ship as package data), and the smoke suite (its `standard` cells) run with the default `--out`
(under the current directory, never inside site-packages), report.md and report.html included.

The fresh venv reuses this interpreter's site-packages for the dependencies (a .pth line: torch is not downloaded
again) but not its transformer-bench (an editable install there is activated by a .pth file of its own, which a
.pth-added directory does not run); the wheel is installed with --no-deps --no-index --ignore-installed (the outer installation, visible through
the .pth line, is left alone)."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("install")
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w",
          str(tmp / "dist")], cwd=tmp)
    wheel = next((tmp / "dist").glob("transformer_bench-*.whl"))
    env_dir = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(env_dir)])
    python = env_dir / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(purelib, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)])
    return env_dir


def _cli(venv: Path, *args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return _run([str(venv / "bin" / "transformer-bench"), *args], cwd=cwd, env=env, timeout=900).stdout


@pytest.mark.slow
def test_the_installed_wheel_runs_away_from_the_tree(venv, tmp_path):
    where = _run([str(venv / "bin" / "python"), "-c", "import harness; print(harness.__file__)"], cwd=tmp_path,
                 env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).stdout
    assert str(venv) in where, where  # the wheel's copy, not the source tree's
    assert _cli(venv, "--version", cwd=tmp_path).startswith("transformer-bench (transformer-bench) 0.")
    assert "usage: transformer-bench" in _cli(venv, "--help", cwd=tmp_path)
    suites = _cli(venv, "list", "suites", cwd=tmp_path)
    assert "long_context" in suites and "smoke" in suites and "_suites" in suites
    # the smoke suite through the installed engine (one mixer: CI runs the whole suite from the tree already)
    _cli(venv, "run", "smoke", "--only", "standard", "--device", "cpu", "--no-progress", cwd=tmp_path)
    (out,) = (tmp_path / "results").glob("smoke-cpu-*")
    assert (out / "results.jsonl").stat().st_size > 0 and (out / "report.md").exists()
    assert (out / "report.html").exists() and (out / "figures.json").exists()
