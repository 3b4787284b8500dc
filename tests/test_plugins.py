"""Plugins: the example package in examples/plugin registers `example_cummean` through the
`transformer_bench.mixers` entry point; it is listed, runs in a suite and passes the fidelity kit, and its broken
variant (a causality leak) fails the kit.

The example is installed into a temporary directory (pip --target, no dependencies) and the checks run in a fresh
interpreter with that directory on the path, so the test needs no installation beforehand (CI also installs the
example into its environment: .ci/run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.results import read_rows

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("plugin")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(ROOT / "examples" / "plugin")], capture_output=True,
                          text=True, cwd=target)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


def _python(plugin_path: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugin_path)])}
    return subprocess.run([sys.executable, *(["-c", code] if code else []), *args], capture_output=True, text=True,
                          env=env, cwd=plugin_path, timeout=900)


def test_the_plugin_mixer_is_listed(plugin_path):
    done = _python(plugin_path, "", "-m", "harness", "list", "mixers", "example*")
    assert done.returncode == 0, done.stderr
    assert "example_cummean" in done.stdout and "transformer-bench-example-plugin" in done.stdout


def test_the_plugin_mixer_runs_in_a_suite(plugin_path, tmp_path):
    suite = tmp_path / "plugin.yaml"
    suite.write_text("suite: plugin\nmixers: [example_cummean, standard]\ntiming: {warmup: 0, min_run_time_s: 0.001, "
                     "min_repeats: 1, max_time_s: 0.2}\nbenchmarks:\n  - kind: scaling\n    modes: [forward, decode]\n"
                     "    sweep: {seq_len: [32, 64], d_model: [32], n_heads: [2]}\n")
    out = tmp_path / "out"
    done = _python(plugin_path, "", "-m", "harness", "run", str(suite), "--device", "cpu", "--out", str(out),
                   "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_rows(out / "results.jsonl")  # the journal's committed rows (no header or commit markers)
    mine = [r for r in rows if r["mixer"] == "example_cummean"]
    assert mine and all(r["status"] == "ok" for r in mine)
    assert {r["metric"] for r in mine} >= {"time_s", "state_bytes"}


KIT = """
import json, sys
from harness.testing import check_mixer
name = sys.argv[1]
if name == "broken":
    import tb_example.broken
    name = tb_example.broken.register()
print(json.dumps({r.check: r.status for r in check_mixer(name)}))
"""


def test_the_plugin_mixer_passes_the_kit(plugin_path):
    done = _python(plugin_path, KIT, "example_cummean")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    assert "failed" not in results.values(), results
    assert results["causality"] == results["decode == forward"] == results["naive oracle"] == "passed"


def test_a_causality_leak_fails_the_kit(plugin_path):
    done = _python(plugin_path, KIT, "broken")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    assert results["causality"] == "failed" and results["decode == forward"] == "failed"
    assert results["naive oracle"] == "passed"  # its reference leaks too: only the kit's other checks catch it


def test_check_mixer_command_exit_status(plugin_path):
    done = _python(plugin_path, "", "-m", "harness", "check-mixer", "example_cummean")
    assert done.returncode == 0 and "every applicable check passed" in done.stdout, done.stdout + done.stderr
