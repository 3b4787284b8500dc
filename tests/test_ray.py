"""`run --executor ray` against a local Ray cluster started here on loopback (127.0.0.1, 2 CPUs: two workers), with
an injected crashing cell; deterministic figures identical to the inline executor's. Skipped without the `ray`
extra."""
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

from harness.compare import compare  # noqa: E402
from harness.suites import load_suite  # noqa: E402
from harness.device import resolve_device  # noqa: E402
from harness.results import read_rows  # noqa: E402
from harness.runner import run_suite  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _fault_mixers():
    """The _fault_* mixers exist only while this module's tests run (registry-wide tests elsewhere must not run a
    deadlocking or segfaulting mixer)."""
    from tests import fault_mixers

    fault_mixers.register()
    yield
    fault_mixers.unregister()


REPO = Path(__file__).resolve().parents[1]
# Ray replaces 127.0.0.1 with the machine's routable address unless it believes clusters are off (its switch for
# Windows and macOS): with it, the whole cluster lives on loopback.
# Token authentication on, with this module's own token, for the head, the workers and the harness alike: Ray >= 2.5x
# turns it on for `ray start --head` whenever ~/.ray/auth_token exists (any earlier local `ray.init()` writes one)
# but never for a client given an explicit address, so without explicit settings the test would depend on the
# machine's home directory (it failed on a CI machine that had that file).
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("ray") / "head.log"
    ray_cli = Path(sys.executable).parent / "ray"
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                             f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                            env={**os.environ, **RAY_ENV}, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: stopped below, nothing else
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield address
    finally:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
                head.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue


def _run_ray(suite: Path, out: Path, address: str, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "run", str(suite), "--device", "cpu", "--out", str(out),
                           "--executor", "ray", "--ray-address", address, "--no-progress", *extra],
                          cwd=REPO, env={**os.environ, **RAY_ENV}, capture_output=True, text=True, timeout=600)


SUITE = """\
suite: ray_faults
mixers: [_fault_ok, _fault_segfault, standard, linear]
time_budget_s: 60
timing: {warmup: 0, min_run_time_s: 0.001, min_repeats: 1, max_time_s: 0.2}
benchmarks:
  - kind: scaling
    modes: [forward]
    sweep: {seq_len: [16, 32], d_model: [16], n_heads: [2]}
    params: {metrics: [time, memory, flops]}
"""


def test_ray_executor_records_a_crash_and_matches_inline(cluster, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    proc = _run_ray(suite, tmp_path / "ray", cluster, "--plugin", "tests.fault_mixers")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(tmp_path / "ray" / "results.jsonl")
    crashed = [r for r in rows if r["mixer"] == "_fault_segfault"]
    assert crashed and {r["status"] for r in crashed} == {"crashed"}
    assert "Ray worker" in crashed[0]["error"]
    healthy = [r for r in rows if r["mixer"] != "_fault_segfault"]
    assert healthy and {r["status"] for r in healthy} == {"ok"}, "the run goes on after the crash"
    healthy_suite = load_suite(suite)[0]  # the same suite inline, without the mixer that would take pytest down
    healthy_suite = healthy_suite.model_copy(update={"mixers": [m for m in healthy_suite.mixers
                                                                if m != "_fault_segfault"]})
    run_suite(healthy_suite, tmp_path / "inline", resolve_device("cpu"), progress=False, write_report=False)
    ok = lambda out: {(r["cell_id"], r["metric"]) for r in read_rows(out / "results.jsonl") if r["status"] == "ok"}
    assert ok(tmp_path / "ray") == ok(tmp_path / "inline")
    table, regressed = compare(tmp_path / "inline", tmp_path / "ray", tolerance=0.0)
    assert not regressed, table


def test_ray_executor_smoke_subset_is_identical_to_the_baseline(cluster, tmp_path):
    """The smoke suite's linear-attention cells on Ray against the committed baseline (written by the inline
    executor); .ci/run does the same for the whole smoke suite."""
    proc = _run_ray(REPO / "suites" / "smoke.yaml", tmp_path / "ray", cluster, "--only", "linear")
    assert proc.returncode == 0, proc.stderr[-3000:]
    base = [r for r in read_rows(REPO / "results" / "baselines" / "smoke.jsonl") if r["mixer"] == "linear"]
    assert base
    from harness.results import append_rows

    append_rows(tmp_path / "base.jsonl", base)
    table, regressed = compare(tmp_path / "base.jsonl", tmp_path / "ray", tolerance=0.0)
    assert not regressed, table


def test_without_an_address_a_new_local_ray_is_started(monkeypatch):
    """No address and no RAY_ADDRESS: ray.init(address="local") starts a Ray for the run. With address=None, Ray
    connects to the cluster named in /tmp/ray/ray_current_cluster when that file exists, and a dead cluster there
    made `run --executor ray` wait on it for minutes (measured on our VM)."""
    import ray

    from harness.executors import ExecutorError
    from harness.executors.ray_executor import RayExecutor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    seen = {}

    def fake_init(address=None, **kwargs):
        seen["address"] = address
        raise ConnectionError("not started in this test")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    with pytest.raises(ExecutorError, match=r"cannot start or reach Ray at \(local\)"):
        RayExecutor().start(SimpleNamespace(plugins=()))
    assert seen["address"] == "local"


@pytest.mark.parametrize("auth_mode, hinted", [(None, True), ("token", False)])
def test_an_unreachable_address_names_token_authentication(monkeypatch, auth_mode, hinted):
    """A client given an address never turns token authentication on by itself (Ray's rule), while a head started
    with ~/.ray/auth_token present does: the error says how to match it, unless RAY_AUTH_MODE is already chosen."""
    import ray

    from harness.executors import ExecutorError
    from harness.executors.ray_executor import RayExecutor

    if auth_mode is None:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_MODE", auth_mode)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: (_ for _ in ()).throw(ConnectionError("unauthenticated")))
    with pytest.raises(ExecutorError, match="127.0.0.1:1") as err:
        RayExecutor(address="127.0.0.1:1").start(SimpleNamespace(plugins=()))
    assert ("RAY_AUTH_MODE=token" in str(err.value)) == hinted


def test_sigterm_stops_a_ray_run_with_its_message_and_a_partial_report(cluster, tmp_path):
    """Ray's core worker installs a SIGTERM handler of its own in the driver (a stack dump, then exit: no message,
    no report); the executor puts the CLI's back after ray.init."""
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.replace("_fault_ok, _fault_segfault, standard, linear", "_fault_ok, _fault_slow")
                     .replace("time_budget_s: 60", "time_budget_s: 120"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(suite), "--device", "cpu", "--out", str(out),
                             "--executor", "ray", "--ray-address", cluster, "--no-progress", "--plugin",
                             "tests.fault_mixers"], cwd=REPO, env={**os.environ, **RAY_ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    from harness.results import read_journal

    deadline = time.monotonic() + 300
    while len(read_journal(out / "results.jsonl").cells) < 2 and proc.poll() is None:
        assert time.monotonic() < deadline, "no cell committed"
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "terminated (SIGTERM)" in err and "partial report" in err and "--resume" in err
    assert (out / "report.md").exists()
