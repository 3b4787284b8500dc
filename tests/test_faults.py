"""Runs that survive anything: crashes and hangs inside cells (isolated executor), SIGKILL of the whole run at
random points, torn and failed writes, two runs on one directory, SIGTERM. Test-only mixers: tests/fault_mixers.py
(imported here and, through the suite's mixer modules, inside the worker)."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.cli import main
from harness.config import Suite
from harness.device import resolve_device
from harness.lock import RunLock
from harness.results import read_journal, read_rows
from harness.runner import RunError, run_suite


@pytest.fixture(autouse=True, scope="module")
def _fault_mixers():
    """The _fault_* mixers exist only while this module's tests run (registry-wide tests elsewhere must not run a
    deadlocking or segfaulting mixer)."""
    from tests import fault_mixers

    fault_mixers.register()
    yield
    fault_mixers.unregister()


CPU = resolve_device("cpu")
REPO = Path(__file__).resolve().parents[1]
TIMING = {"warmup": 0, "min_run_time_s": 0.001, "min_repeats": 1, "max_time_s": 0.2}


def suite_dict(mixers, seq=(16,), budget=2.0, modes=("forward",)):
    return {"suite": "faults", "mixers": list(mixers), "time_budget_s": budget, "timing": TIMING,
            "benchmarks": [{"kind": "scaling", "modes": list(modes),
                            "sweep": {"seq_len": list(seq), "d_model": [16], "n_heads": [2]},
                            "params": {"metrics": ["time", "memory"]}}]}


def ok_keys(out: Path) -> Counter:
    """(cell, metric) of every ok row, counted (a duplicate shows as 2)."""
    return Counter((r["cell_id"], r["metric"]) for r in read_rows(out / "results.jsonl") if r["status"] == "ok")


def by_mixer(out: Path) -> dict[str, dict]:
    return {r["mixer"]: r for r in read_rows(out / "results.jsonl")}


def test_isolated_cells_record_crashes_and_hangs_and_the_run_goes_on(tmp_path):
    mixers = ["_fault_segfault", "_fault_exit", "_fault_deadlock", "_fault_slow", "_fault_ok"]
    started = time.monotonic()
    summary = run_suite(Suite.model_validate(suite_dict(mixers)), tmp_path, CPU, progress=False, write_report=False,
                        executor="isolated", executor_options={"echo_stderr": False})
    elapsed = time.monotonic() - started
    rows = by_mixer(tmp_path)
    assert rows["_fault_segfault"]["status"] == "crashed"
    assert "SIGSEGV" in rows["_fault_segfault"]["error"] and "Fatal Python error" in rows["_fault_segfault"]["error"]
    assert rows["_fault_exit"]["status"] == "crashed" and "sys.exit(3)" in rows["_fault_exit"]["error"]
    assert rows["_fault_deadlock"]["status"] == "timeout" and "killed by the runner" in rows["_fault_deadlock"]["error"]
    assert rows["_fault_slow"]["status"] == "timeout" and "time budget of 2 s" in rows["_fault_slow"]["error"]
    assert rows["_fault_ok"]["status"] == "ok", "the run goes on after every failure"
    assert summary.statuses == Counter({"crashed": 2, "timeout": 2, "ok": 1})
    assert elapsed < 120, "the deadlock was killed near its budget, not waited out"
    # the ok rows are those of an uninterrupted inline run of the healthy mixer
    run_suite(Suite.model_validate(suite_dict(["_fault_ok"])), tmp_path / "ref", CPU, progress=False,
              write_report=False)
    assert set(ok_keys(tmp_path)) == set(ok_keys(tmp_path / "ref"))


def test_inline_executor_records_sys_exit_as_crashed(tmp_path):
    run_suite(Suite.model_validate(suite_dict(["_fault_exit", "_fault_ok"])), tmp_path, CPU, progress=False,
              write_report=False)
    rows = by_mixer(tmp_path)
    assert rows["_fault_exit"]["status"] == "crashed" and rows["_fault_ok"]["status"] == "ok"


def _write_suite(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "harness", "run", *args, "--device", "cpu", "--no-progress",
                             "--plugin", "tests.fault_mixers"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_loses_and_duplicates_nothing(tmp_path):
    data = suite_dict(["_fault_ok", "standard"], seq=(16, 32, 64), budget=30.0)
    path = _write_suite(tmp_path / "s.yaml", data)
    out = tmp_path / "out"
    rng = random.Random(13)
    kills = 0
    for attempt in range(8):
        proc = _cli(str(path), "--out", str(out), *(["--resume"] if attempt else []))
        if attempt < 2:  # SIGKILL the run (its whole process group) once it has started measuring
            _wait_for(lambda: (out / "results.jsonl").exists() or proc.poll() is not None)
            time.sleep(rng.uniform(0.0, 3.0))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
    assert proc.returncode == 0 and kills >= 1, err
    run_suite(Suite.model_validate(data), tmp_path / "ref", CPU, progress=False, write_report=False)
    got, ref = ok_keys(out), ok_keys(tmp_path / "ref")
    assert set(got) == set(ref), "after resume the ok rows are those of an uninterrupted run"
    assert max(got.values()) == 1, "no cell is recorded twice"
    assert len(read_journal(out / "results.jsonl").cells) == 6


def test_torn_tail_is_set_aside_and_its_cell_rerun(tmp_path, capsys):
    s = Suite.model_validate(suite_dict(["_fault_ok"], seq=(16, 32, 64)))
    run_suite(s, tmp_path, CPU, progress=False, write_report=False)
    reference = ok_keys(tmp_path)
    path = tmp_path / "results.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    assert json.loads(lines[-1])["_commit"].endswith("n=64/b=1/d=16/h=2/float32/seed=0")
    path.write_bytes(b"".join(lines[:-2]) + lines[-2][:37])  # the last cell cut mid-row, its marker lost
    journal = read_journal(path)
    assert len(journal.cells) == 2 and journal.torn, "a cut cell is not counted as done"
    assert not any(r["seq_len"] == 64 for r in read_rows(path)), "nor any of its rows"
    capsys.readouterr()
    summary = run_suite(s, tmp_path, CPU, progress=False, write_report=False, resume=True)
    assert "torn write" in capsys.readouterr().err
    assert summary.ran == 1 and summary.reused == 2
    aside = list(tmp_path.glob("results.jsonl.torn-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"".join(lines[-4:-2]) + lines[-2][:37], "the cut cell"
    assert ok_keys(tmp_path) == reference


def test_a_failed_write_leaves_no_fragment_and_stops_with_a_message(tmp_path):
    """A full disk (here the file size limit, RLIMIT_FSIZE, with SIGXFSZ ignored so that write() fails with EFBIG):
    the cell being written is cut back out, the run stops with a message, and --resume completes it."""
    resource = pytest.importorskip("resource")
    s = Suite.model_validate(suite_dict(["_fault_ok"], seq=(16, 32, 64)))
    run_suite(s, tmp_path, CPU, progress=False, write_report=False)
    reference = ok_keys(tmp_path)
    path = tmp_path / "results.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    keep = sum(len(l) for l in lines[:-4])  # the header, cells 16 and 32
    path.write_bytes(b"".join(lines[:-4]))
    os.truncate(path, keep)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (keep + 300, hard))  # room for the header, not for a cell
        with pytest.raises(RunError, match="cannot write"):
            run_suite(s, tmp_path, CPU, progress=False, write_report=False, resume=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert not read_journal(path).torn, "the failed write was cut back out"
    run_suite(s, tmp_path, CPU, progress=False, write_report=False, resume=True)
    assert ok_keys(tmp_path) == reference


def test_a_second_run_on_a_live_directory_is_refused_and_sigterm_stops_the_first(tmp_path, capsys):
    data = suite_dict(["_fault_ok", "_fault_slow"], budget=60.0)
    path = _write_suite(tmp_path / "s.yaml", data)
    out = tmp_path / "out"
    first = _cli(str(path), "--out", str(out))
    _wait_for(lambda: len(read_journal(out / "results.jsonl").cells) == 1 or first.poll() is not None)
    assert first.poll() is None, first.communicate()
    holder = json.loads((out / ".lock").read_text())
    assert holder["pid"] == first.pid
    capsys.readouterr()
    for extra in ([], ["--resume"]):
        assert main(["run", str(path), "--out", str(out), "--device", "cpu", "--executor", "inline", *extra]) == 2
        err = capsys.readouterr().err
        assert f"in use by another run (pid {first.pid} on host {holder['host']}" in err, err
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "partial report" in err and "--resume" in err
    assert (out / "report.md").exists()
    assert (out / ".lock").read_text() == "", "the lock is released"


def test_a_stale_lock_is_taken_over(tmp_path, capsys):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "started": "then"}))
    run_suite(Suite.model_validate(suite_dict(["_fault_ok"])), tmp_path, CPU, progress=False, write_report=False)
    assert "stale lock of pid 999999 on gone" in capsys.readouterr().err
    with RunLock(tmp_path):
        with pytest.raises(RunError, match=f"pid {os.getpid()}"):
            run_suite(Suite.model_validate(suite_dict(["_fault_ok"])), tmp_path, CPU, progress=False,
                      write_report=False, resume=True)


def test_a_worker_that_cannot_start_stops_the_run_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_PLUGINS", "tests.fault_worker_import")
    with pytest.raises(RunError, match="worker failed to start.*cannot be imported inside a worker"):
        run_suite(Suite.model_validate(suite_dict(["_fault_ok"])), tmp_path, CPU, progress=False,
                  write_report=False, executor="isolated", executor_options={"echo_stderr": False})
    monkeypatch.setenv("HARNESS_PLUGINS", "tests.no_such_plugin")
    assert main(["run", str(_write_suite(tmp_path / "s.yaml", suite_dict(["_fault_ok"]))), "--out",
                 str(tmp_path / "o"), "--device", "cpu"]) == 2


def test_unwritable_out_and_an_empty_report_are_messages(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    suite = str(_write_suite(tmp_path / "s.yaml", suite_dict(["_fault_ok"])))
    assert main(["run", suite, "--out", str(blocker / "out"), "--device", "cpu", "--executor", "inline"]) == 2
    err = capsys.readouterr().err
    assert "cannot write to the output directory" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "results.jsonl").write_text("")
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no completed cell" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err
