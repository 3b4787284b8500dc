"""The runner records every failure as data, keeps going, and resumes an interrupted run."""
import json
import re
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from architectures import Mixer, MixerSpec, Paper
from architectures.registry import MIXERS, register_mixer
from harness.config import Suite
from harness.device import resolve_device
from harness.results import read_rows
from harness.runner import RunError, run_suite

SPEC = MixerSpec(family="test fixture", paper=Paper("none", "0000.00000", 2000), claimed_time=None,
                 claimed_memory=None, time_exponent=None, memory_exponent=None, state_exponent=None,
                 modes=frozenset({"causal"}))
CALLS: list[int] = []  # seq_len of every forward call of _test_counting


class _Base(Mixer):
    def __init__(self, d_model, n_heads, *, causal=True, impl=None):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        self.proj = nn.Linear(d_model, d_model)


class Raises(_Base):
    def forward(self, x):
        raise ValueError("deliberate failure")


class OutOfMemory(_Base):
    def forward(self, x):
        if x.shape[1] >= 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB (simulated)")
        return self.proj(x)


HUNGRY = {"bytes": 2**31}


class Hungry(_Base):
    """Asks the allocator for HUNGRY["bytes"] at n >= 64 (a real allocation, not a simulated error)."""

    def forward(self, x):
        if x.shape[1] >= 64:
            torch.empty(HUNGRY["bytes"], dtype=torch.uint8)
        return self.proj(x)


class Slow(_Base):
    def forward(self, x):
        time.sleep(30)
        return self.proj(x)


class Counting(_Base):
    def forward(self, x):
        CALLS.append(x.shape[1])
        return self.proj(x)


INTERRUPT = {"at": None}  # seq_len at which _test_interrupt raises KeyboardInterrupt (None: never)


class Interrupting(_Base):
    def forward(self, x):
        CALLS.append(x.shape[1])
        if INTERRUPT["at"] is not None and x.shape[1] >= INTERRUPT["at"]:
            raise KeyboardInterrupt
        return self.proj(x)


FIXTURES = {"_test_raises": Raises, "_test_oom": OutOfMemory, "_test_slow": Slow, "_test_counting": Counting,
            "_test_interrupt": Interrupting, "_test_hungry": Hungry}


@pytest.fixture(scope="module", autouse=True)
def test_mixers():
    for name, cls in FIXTURES.items():
        register_mixer(name, spec=SPEC)(cls)
    yield
    for name in FIXTURES:
        MIXERS.unregister(name)


def suite(mixers, seq_lens=(32, 64, 128), budget=60.0, modes=("forward",)):
    return Suite.model_validate({
        "suite": "t", "mixers": list(mixers), "time_budget_s": budget,
        "timing": {"warmup": 0, "min_run_time_s": 0.001, "min_repeats": 1, "max_time_s": 0.5},
        "benchmarks": [{"kind": "scaling", "modes": list(modes),
                        "sweep": {"seq_len": list(seq_lens), "d_model": [16], "n_heads": [2]},
                        "params": {"metrics": ["time", "memory"]}}]})


def statuses(out: Path) -> dict[tuple[str, int], set[str]]:
    result: dict = {}
    for r in read_rows(out / "results.jsonl"):
        result.setdefault((r["mixer"], r["seq_len"]), set()).add(r["status"])
    return result


CPU = resolve_device("cpu")


def test_failures_are_recorded_and_the_run_completes(tmp_path):
    s = suite(["_test_raises", "_test_oom", "_test_slow", "standard"], budget=3.0)
    summary = run_suite(s, tmp_path, CPU, progress=False, write_report=False)
    st = statuses(tmp_path)
    assert summary.cells == 12 and summary.ran == 12
    assert all(st[("_test_raises", n)] == {"error"} for n in (32, 64, 128))
    assert st[("_test_oom", 32)] == {"ok"}
    assert st[("_test_oom", 64)] == {"oom"}
    assert st[("_test_oom", 128)] == {"skipped"}, "after an OOM, longer lengths are skipped"
    assert st[("_test_slow", 32)] == {"timeout"}
    assert st[("_test_slow", 64)] == {"skipped"} and st[("_test_slow", 128)] == {"skipped"}
    assert all(st[("standard", n)] == {"ok"} for n in (32, 64, 128))
    rows = read_rows(tmp_path / "results.jsonl")
    err = next(r for r in rows if r["mixer"] == "_test_raises")
    assert "ValueError: deliberate failure" in err["error"]
    skipped = next(r for r in rows if r["mixer"] == "_test_oom" and r["seq_len"] == 128)
    assert "oom at seq_len=64" in skipped["error"]
    timeout = next(r for r in rows if r["mixer"] == "_test_slow" and r["seq_len"] == 32)
    assert "time budget" in timeout["error"]


def test_an_allocation_over_the_memory_cap_is_an_oom_cell(tmp_path):
    """On CPU the run caps its address space (RLIMIT_AS): an allocation past the cap fails inside PyTorch and is
    recorded as `oom`, instead of the kernel's OOM killer ending the run. Here the cap is set 1 GiB above what the
    process already maps, and the fixture asks for more than the whole cap: a smaller request could be served from
    heap memory that earlier tests freed (the caching allocator keeps it mapped), and then pass under any cap."""
    resource = pytest.importorskip("resource")
    import os

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    if mapped + 2**31 > physical:
        pytest.skip("the process already maps most of physical memory")
    before = resource.getrlimit(resource.RLIMIT_AS)
    HUNGRY["bytes"] = mapped + 2**31  # over the cap below, whatever the process has mapped and freed
    summary = run_suite(suite(["_test_hungry", "standard"]), tmp_path, CPU, progress=False, write_report=False,
                        cpu_memory_fraction=(mapped + 2**30) / physical)
    st = statuses(tmp_path)
    assert st[("_test_hungry", 32)] == {"ok"} and st[("_test_hungry", 64)] == {"oom"}
    assert st[("_test_hungry", 128)] == {"skipped"}
    assert all(st[("standard", n)] == {"ok"} for n in (32, 64, 128)), "the run goes on after the oom cell"
    oom = next(r for r in read_rows(tmp_path / "results.jsonl") if r["status"] == "oom")
    assert "can't allocate memory" in oom["error"]
    assert summary.statuses["oom"] == 1
    assert resource.getrlimit(resource.RLIMIT_AS) == before, "the cap is lifted when the run ends"
    assert json.loads((tmp_path / "env.json").read_text())["memory_cap"].startswith("RLIMIT_AS")


def test_rows_carry_the_cell_and_environment(tmp_path):
    run_suite(suite(["flash"], seq_lens=(32,)), tmp_path, CPU, progress=False, write_report=False)
    rows = read_rows(tmp_path / "results.jsonl")
    required = {"run_id", "suite", "benchmark", "mixer", "impl", "mode", "seq_len", "batch", "d_model", "n_heads",
                "dtype", "device", "metric", "value", "unit", "status", "error", "hparams", "threads",
                "sdpa_backend"}
    for r in rows:
        assert required <= set(r)
        assert r["impl"] == "sdpa_flash" and r["sdpa_backend"] == "FLASH_ATTENTION (cpu)"
        assert r["hparams"] == {"rope_theta": 10000.0}
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["torch_threads"] == torch.get_num_threads()
    assert env["matmul_peak_flops"]["float32"] > 0
    assert (tmp_path / "suite.yaml").exists() and (tmp_path / "specs.json").exists()


def test_suite_cpu_threads_set_the_thread_count_and_are_recorded(tmp_path):
    before = torch.get_num_threads()
    s = Suite.model_validate({**suite(["linear"], seq_lens=(32,)).model_dump(),
                              "timing": {"warmup": 0, "min_run_time_s": 0.001, "min_repeats": 1, "cpu_threads": 1}})
    try:
        run_suite(s, tmp_path / "suite", CPU, progress=False, write_report=False)
        assert json.loads((tmp_path / "suite" / "env.json").read_text())["torch_threads"] == 1
        assert {r["threads"] for r in read_rows(tmp_path / "suite" / "results.jsonl")} == {1}
        run_suite(s, tmp_path / "cli", CPU, progress=False, write_report=False, threads=2)  # --threads overrides
        assert json.loads((tmp_path / "cli" / "env.json").read_text())["torch_threads"] == 2
        entry = {**s.benchmarks[0].model_dump(), "name": "two", "cpu_threads": 2}  # an entry overrides the suite
        mixed = Suite.model_validate({**s.model_dump(), "benchmarks": [s.benchmarks[0].model_dump(), entry]})
        run_suite(mixed, tmp_path / "entry", CPU, progress=False, write_report=False)
        rows = read_rows(tmp_path / "entry" / "results.jsonl")
        assert {r["benchmark"]: r["threads"] for r in rows} == {"scaling": 1, "two": 2}
        assert torch.get_num_threads() == before, "the run restores the process's thread count"
    finally:
        torch.set_num_threads(before)


def test_unavailable_backend_is_a_skipped_cell(tmp_path):
    s = suite([{"name": "flash", "label": "flash_cudnn", "impl": "sdpa_cudnn"}], seq_lens=(32,))
    run_suite(s, tmp_path, CPU, progress=False, write_report=False)
    rows = read_rows(tmp_path / "results.jsonl")
    assert [r["status"] for r in rows] == ["skipped"]
    assert "CUDNN_ATTENTION unavailable" in rows[0]["error"]


def test_resume_reruns_only_missing_cells(tmp_path):
    CALLS.clear()
    s = suite(["_test_counting"], seq_lens=(16, 32, 64))
    run_suite(s, tmp_path, CPU, progress=False, write_report=False)
    first = list(CALLS)
    assert sorted(set(first)) == [16, 32, 64]
    # Lose the n=32 cell, as if the run had died before writing it.
    path = tmp_path / "results.jsonl"
    kept = [line for line in path.read_text().splitlines() if '"seq_len": 32' not in line]
    path.write_text("\n".join(kept) + "\n")
    with pytest.raises(RunError, match="--resume"):
        run_suite(s, tmp_path, CPU, progress=False, write_report=False)
    env_path = tmp_path / "env.json"
    env = json.loads(env_path.read_text())
    env["matmul_peak_flops"]["float32"] = 123.0  # a figure no measurement gives: the first run's peak must stay
    env_path.write_text(json.dumps(env))
    CALLS.clear()
    summary = run_suite(s, tmp_path, CPU, progress=False, resume=True, write_report=False)
    assert set(CALLS) == {32}, "only the missing cell runs again"
    assert summary.reused == 2 and summary.ran == 1
    assert sorted({r["seq_len"] for r in read_rows(path)}) == [16, 32, 64]
    run_ids = {r["run_id"] for r in read_rows(path)}
    assert len(run_ids) == 1, "a resumed run keeps its run id"
    env = json.loads(env_path.read_text())
    assert env["matmul_peak_flops"] == {"float32": 123.0}, "a resumed run keeps the peak its cells were rated by"
    assert env["resumed_from"]["time_utc"] and env["resumed_from"]["suite_changes"] == []


def test_rerun_withdraws_the_matching_committed_cells_and_measures_them_again(tmp_path, capsys):
    CALLS.clear()
    s = suite(["_test_counting"], seq_lens=(16, 32, 64))
    run_suite(s, tmp_path, CPU, progress=False, write_report=False)
    path = tmp_path / "results.jsonl"
    before = {r["cell_id"]: r for r in read_rows(path) if r["seq_len"] == 32}
    with pytest.raises(RunError, match="with --resume"):
        run_suite(s, tmp_path, CPU, progress=False, write_report=False, rerun="*")
    with pytest.raises(RunError, match="matches no committed cell"):
        run_suite(s, tmp_path, CPU, progress=False, resume=True, write_report=False, rerun="*/n=999/*")
    CALLS.clear()
    capsys.readouterr()
    # brackets are literal (cell ids hold "[impl]"); * matches anything
    summary = run_suite(s, tmp_path, CPU, progress=False, resume=True, write_report=False,
                        rerun="*_test_counting[torch]/*/n=32/*")
    assert set(CALLS) == {32} and summary.reused == 2 and summary.ran == 1
    assert "1 committed cell(s) withdrawn" in capsys.readouterr().err
    rows = read_rows(path)
    assert sorted(r["seq_len"] for r in rows if r["metric"] == "time_s") == [16, 32, 64], "one n=32 cell, the new one"
    redone = {r["cell_id"]: r for r in rows if r["seq_len"] == 32}
    assert redone.keys() == before.keys() and all(redone[k]["time_utc"] >= before[k]["time_utc"] for k in redone)
    text = path.read_text()
    assert text.count('"_retract"') == 1 and '"reason": "--rerun ' in text, "the old rows stay, marked as withdrawn"
    CALLS.clear()
    run_suite(s, tmp_path, CPU, progress=False, resume=True, write_report=False)
    assert CALLS == [], "after the rerun the run is complete"


def test_a_withdrawn_cell_that_was_not_redone_counts_as_missing(tmp_path):
    from harness.results import read_journal, retract_cells

    CALLS.clear()
    s = suite(["_test_counting"], seq_lens=(16, 32))
    run_suite(s, tmp_path, CPU, progress=False, write_report=False)
    path = tmp_path / "results.jsonl"
    journal = read_journal(path)
    cell = next(c for c in journal.cells if "/n=16/" in c)
    retract_cells(path, [cell], "test")
    journal = read_journal(path)
    assert cell not in journal.cells and journal.retracted == {cell: "test"}
    assert all(r["cell_id"] != cell for r in journal.rows) and not journal.torn and journal.orphans == 0
    CALLS.clear()
    run_suite(s, tmp_path, CPU, progress=False, resume=True, write_report=False)
    assert set(CALLS) == {16}
    assert read_journal(path).retracted == {}


def test_resuming_with_a_changed_suite_records_and_reports_what_changed(tmp_path, capsys):
    CALLS.clear()
    run_suite(suite(["_test_counting"], seq_lens=(16, 32)), tmp_path, CPU, progress=False, write_report=False)
    changed = suite(["_test_counting"], seq_lens=(16, 32, 64))
    changed = changed.model_copy(update={"timing": changed.timing.model_copy(update={"min_repeats": 3})})
    capsys.readouterr()
    CALLS.clear()
    run_suite(changed, tmp_path, CPU, progress=False, resume=True, write_report=False)
    assert set(CALLS) == {64}  # the added length runs; the others are kept as measured
    diff = json.loads((tmp_path / "env.json").read_text())["resumed_from"]["suite_changes"]
    assert diff == ["suite.timing.min_repeats", "suite.benchmarks[0].sweep.seq_len"]
    err = capsys.readouterr().err
    assert "differs from the one its earlier cells ran under" in err and "suite.timing.min_repeats" in err


def test_interrupted_run_keeps_completed_cells_and_resumes(tmp_path):
    s = suite(["_test_interrupt"], seq_lens=(16, 32, 64, 128))
    INTERRUPT["at"] = 64  # Ctrl-C while the n=64 cell runs
    with pytest.raises(KeyboardInterrupt):
        run_suite(s, tmp_path, CPU, progress=False, write_report=False)
    assert sorted({r["seq_len"] for r in read_rows(tmp_path / "results.jsonl")}) == [16, 32]
    INTERRUPT["at"] = None
    CALLS.clear()
    run_suite(s, tmp_path, CPU, progress=False, resume=True, write_report=False)
    assert set(CALLS) == {64, 128}
    rows = read_rows(tmp_path / "results.jsonl")
    assert sorted({r["seq_len"] for r in rows}) == [16, 32, 64, 128]
    assert {r["status"] for r in rows} == {"ok"}


def test_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"cell_id": "a", "status": "ok"}\n{"cell_id": "b", "sta')
    assert [r["cell_id"] for r in read_rows(path)] == ["a"]


def test_missing_mixers_are_reported_when_allowed(tmp_path):
    s = Suite.model_validate({**suite(["standard"]).model_dump(), "mixers": ["standard", "not_yet_written"],
                              "allow_missing_mixers": True})
    run_suite(s, tmp_path, CPU, progress=False, write_report=False)
    st = statuses(tmp_path)
    assert st[("not_yet_written", 32)] == {"missing"}


def test_an_entry_timing_overrides_the_suites(tmp_path):
    """`timing:` in a benchmark entry overrides the suite's settings for its cells only."""
    s = Suite.model_validate({
        "suite": "t", "mixers": ["linear"],
        # min_run_time_s tiny: the number of repeats is then exactly min_repeats
        "timing": {"warmup": 0, "min_run_time_s": 1e-6, "min_repeats": 2, "max_time_s": 5.0},
        "benchmarks": [
            {"kind": "scaling", "sweep": {"seq_len": [32], "d_model": [16], "n_heads": [2]},
             "params": {"metrics": ["time"]}},
            {"kind": "scaling", "name": "more", "timing": {"min_repeats": 12},
             "sweep": {"seq_len": [32], "d_model": [16], "n_heads": [2]}, "params": {"metrics": ["time"]}}]})
    run_suite(s, tmp_path, CPU, progress=False, write_report=False)
    repeats = {r["benchmark"]: r["repeats"] for r in read_rows(tmp_path / "results.jsonl") if r["metric"] == "time_s"}
    assert repeats["scaling"] == 2 and repeats["more"] == 12


def test_benchmarks_filter_runs_some_entries_and_resume_runs_the_rest(tmp_path):
    s = Suite.model_validate({
        "suite": "t", "mixers": ["_test_counting"], "time_budget_s": 60.0,
        "timing": {"warmup": 0, "min_run_time_s": 0.001, "min_repeats": 1, "max_time_s": 0.5},
        "benchmarks": [{"kind": "scaling", "name": name, "modes": ["forward"],
                        "sweep": {"seq_len": [n], "d_model": [16], "n_heads": [2]},
                        "params": {"metrics": ["time"]}} for name, n in (("short", 16), ("long", 32))]})
    with pytest.raises(RunError, match="matches none of the suite's entries: short, long"):
        run_suite(s, tmp_path / "x", CPU, benchmarks="nope*", progress=False, write_report=False)
    CALLS.clear()
    run_suite(s, tmp_path, CPU, benchmarks="lo*", progress=False, write_report=False)
    assert set(CALLS) == {32}
    CALLS.clear()
    summary = run_suite(s, tmp_path, CPU, resume=True, progress=False, write_report=False)
    assert set(CALLS) == {16} and summary.reused == 1 and summary.ran == 1
    assert {r["benchmark"] for r in read_rows(tmp_path / "results.jsonl")} == {"short", "long"}


def test_cells_filter_runs_the_matching_cells_first_and_resume_runs_the_rest(tmp_path):
    """--cells: e.g. one MQAR configuration for every mixer before the longer ones (cell ids hold brackets: literal)."""
    CALLS.clear()
    s = suite(["_test_counting"], seq_lens=(16, 32, 64))
    with pytest.raises(RunError, match="matches none of the 3 planned cells"):
        run_suite(s, tmp_path / "x", CPU, cells_glob="*/n=999/*", progress=False, write_report=False)
    summary = run_suite(s, tmp_path, CPU, cells_glob="*_test_counting[torch]/*/n=64/*, */n=16/*", progress=False,
                        write_report=False)
    assert set(CALLS) == {16, 64} and summary.ran == 2
    assert sum(len(ids) for ids in json.loads((tmp_path / "plan.json").read_text())["cells"].values()) == 3, \
        "the plan keeps the deferred cell"
    from harness.runner import pending_cells
    assert sum(pending_cells(tmp_path).values()) == 1
    CALLS.clear()
    summary = run_suite(s, tmp_path, CPU, resume=True, progress=False, write_report=False)
    assert set(CALLS) == {32} and summary.reused == 2 and summary.ran == 1
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["resumed_from"]["suite_changes"] == [], "a cell filter is not a change of how cells are measured"


def test_an_incomplete_run_says_what_is_missing_until_resumed(tmp_path, capsys):
    from harness.cli import main
    from harness.runner import pending_cells

    s = {"suite": "t", "mixers": ["_test_counting"], "time_budget_s": 60.0,
         "timing": {"warmup": 0, "min_run_time_s": 0.001, "min_repeats": 1, "max_time_s": 0.5},
         "benchmarks": [{"kind": "scaling", "name": name, "modes": ["forward"],
                         "sweep": {"seq_len": lengths, "d_model": [16], "n_heads": [2]},
                         "params": {"metrics": ["time"]}} for name, lengths in (("short", [16]), ("long", [32, 64]))]}
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps(s))  # JSON is YAML
    out = tmp_path / "out"
    argv = ["run", str(path), "--out", str(out), "--device", "cpu", "--no-progress", "--executor", "inline"]
    assert main([*argv, "--benchmarks", "short"]) == 0
    assert json.loads((out / "plan.json").read_text())["cells"].keys() == {"short", "long"}
    assert pending_cells(out) == {"long": 2}
    assert f"run them with:\n  python -m harness run {path} --resume {out}" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "**Incomplete run**: 2 of 3 planned cells have no result yet (`long` 2 of 2)" in report
    assert f"`python -m harness run {path} --resume {out}`" in report
    assert main(["run", str(path), "--resume", str(out), "--device", "cpu", "--no-progress",
                 "--executor", "inline"]) == 0
    assert pending_cells(out) == {} and "Incomplete run" not in (out / "report.md").read_text()
    assert "have no result yet" not in capsys.readouterr().out


def test_run_figures_of_deferred_entries_are_kept(tmp_path):
    """figures.json holds every entry's run-start figures, also when --benchmarks runs only some entries (a resume
    of one entry once wiped the scaling entry's KV-cache-per-token figures from a committed report)."""
    entry = {"kind": "scaling", "modes": ["decode"], "sweep": {"seq_len": [16], "d_model": [16], "n_heads": [2]},
             "params": {"metrics": ["state"]}}
    s = Suite.model_validate({"suite": "t", "mixers": ["standard"], "time_budget_s": 60.0,
                              "benchmarks": [{**entry, "name": "first"}, {**entry, "name": "second"}]})
    run_suite(s, tmp_path, CPU, benchmarks="first", progress=False, write_report=False)
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert set(figures) == {"first", "second"} and figures["second"]["kv_cache_per_token"]


def test_every_row_and_env_json_say_which_commit_and_device_measured_each_invocation(tmp_path):
    """Provenance of a resumed run: cells of several invocations (commits, machines) sit in one run directory."""
    from harness.device import cpu_model
    from harness.env import git_commit
    from harness.report.build import markdown, provenance
    from harness.report.run import RunData

    CALLS.clear()
    s = suite(["_test_counting"], seq_lens=(16, 32))
    run_suite(s, tmp_path, CPU, cells_glob="*/n=16/*", progress=False, write_report=False)
    run_suite(s, tmp_path, CPU, resume=True, progress=False, write_report=False)
    rows = read_rows(tmp_path / "results.jsonl")
    assert {r["git_commit"] for r in rows} == {git_commit()} and {r["device_name"] for r in rows} == {cpu_model()}
    env = json.loads((tmp_path / "env.json").read_text())
    assert [i["cells"] for i in env["invocations"]] == ["*/n=16/*", None], "one entry per invocation, in order"
    assert all(i["git_commit"] == git_commit() and i["device_name"] == cpu_model() for i in env["invocations"])
    assert env["invocations"][1]["suite_changes"] == []
    text = "\n".join(provenance(RunData.load(tmp_path)))
    both = rf"\| {re.escape(git_commit())} +\| {re.escape(cpu_model())} +\| +2 \|"
    assert re.search(both, text), f"both cells under one commit and device:\n{text}"
    assert "*/n=16/*" in text, "the invocations table names the first one's --cells"
    assert "## Provenance" in markdown(RunData.load(tmp_path))


def test_provenance_of_rows_written_before_it_was_recorded(tmp_path):
    """Older rows have no git_commit or device_name: the report counts them as not recorded, beside newer ones."""
    from harness.report.build import NOT_RECORDED, provenance
    from harness.report.run import RunData

    s = suite(["_test_counting"], seq_lens=(16, 32))
    run_suite(s, tmp_path, CPU, cells_glob="*/n=16/*", progress=False, write_report=False)
    path = tmp_path / "results.jsonl"
    old = [{k: v for k, v in json.loads(line).items() if k not in ("git_commit", "device_name")}
           for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(o) + "\n" for o in old))
    env_path = tmp_path / "env.json"
    env = json.loads(env_path.read_text())
    del env["invocations"]
    env_path.write_text(json.dumps(env))
    run_suite(s, tmp_path, CPU, resume=True, progress=False, write_report=False)
    lines = provenance(RunData.load(tmp_path))
    cells_table = lines[lines.index("Cells by the commit that ran them and the device that measured them:") + 2]
    assert NOT_RECORDED in "\n".join(lines) and cells_table.count("|") > 0
    invocations = json.loads(env_path.read_text())["invocations"]
    assert len(invocations) == 2 and invocations[1]["cells"] is None, "the old env.json's own invocation is kept"


def test_resuming_the_same_suite_from_another_path_is_no_change(tmp_path):
    """The suite file's path is not how cells are measured: a copy of the same suite (another checkout) is the same."""
    import yaml

    s = suite(["_test_counting"], seq_lens=(16, 32))
    one, two = tmp_path / "a" / "s.yaml", tmp_path / "b" / "s.yaml"
    for p in (one, two):
        p.parent.mkdir()
        p.write_text(yaml.safe_dump(s.model_dump(mode="json")))
    out = tmp_path / "run"
    run_suite(s, out, CPU, suite_path=one, cells_glob="*/n=16/*", progress=False, write_report=False)
    run_suite(s, out, CPU, suite_path=two, resume=True, progress=False, write_report=False)
    assert json.loads((out / "env.json").read_text())["resumed_from"]["suite_changes"] == []


def test_git_commit_is_dirty_for_changed_code_and_not_for_the_run_directory_it_writes(tmp_path):
    import subprocess

    from harness.env import git_commit

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "reports" / "run").mkdir(parents=True)
    (tmp_path / "reports" / "run" / "results.jsonl").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    head = git_commit(tmp_path)
    assert len(head) == 40 and not head.endswith("+dirty")
    (tmp_path / "reports" / "run" / "results.jsonl").write_text("{}\n{}\n")  # the run appends to its own file
    assert git_commit(tmp_path).endswith("+dirty"), "without the run directory named, any change is dirty"
    assert git_commit(tmp_path, ignore=tmp_path / "reports" / "run") == head
    assert git_commit(tmp_path, ignore=tmp_path / "elsewhere") == head + "+dirty"
    assert git_commit(tmp_path, ignore=Path("/")) == head + "+dirty", "a directory outside the checkout changes nothing"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path, ignore=tmp_path / "reports" / "run") == head + "+dirty", "changed code is dirty"
