"""The recall benchmark kinds through the runner: cells, rows (every lr, the best marked), state bytes, passkey
lengths, profiles of params; the equivalence benchmark; the `claims` kind; the master_table suite's wiring."""
import copy
from pathlib import Path

import pytest
import torch
import yaml

import architectures
from harness.benchmarks import BENCHMARKS
from harness.config import Suite
from harness.suites import load_suite
from harness.report.build import write_report
from harness.results import read_rows
from harness.runner import plan, run_suite

REPO = Path(__file__).resolve().parents[1]
TINY = {"train_examples": 64, "test_examples": 32, "epochs": 1.0, "eval_every": 2, "lrs": [1e-3, 3e-3]}


def _suite(benchmarks, mixers=("standard", "linear")):
    return Suite.model_validate({"suite": "t", "mixers": list(mixers), "time_budget_s": 120,
                                 "benchmarks": benchmarks})


def _run(tmp_path, suite):
    torch.set_num_threads(1)
    run_suite(suite, tmp_path / "out", torch.device("cpu"), progress=False, write_report=False)
    return [r for r in read_rows(tmp_path / "out" / "results.jsonl")]


def test_mqar_cells_rows_and_state_bytes(tmp_path):
    entry = {"kind": "mqar", "modes": ["train"], "sweep": {"seq_len": [16, 32], "batch": [16], "d_model": [16],
                                                          "n_heads": [2]},
             "params": {**TINY, "vocab_size": 32, "n_pairs": [2, 8]}}
    suite = _suite([entry])
    cells = plan(suite, torch.device("cpu"))
    # 4 * n_pairs <= seq_len: (16, 2), (32, 2), (32, 8) for each of the two mixers
    assert sorted({(c.seq_len, c.n_pairs) for c in cells}) == [(16, 2), (32, 2), (32, 8)]
    assert len({c.cell_id for c in cells}) == len(cells) == 6
    rows = _run(tmp_path, suite)
    assert {r["status"] for r in rows} == {"ok"}
    acc = [r for r in rows if r["metric"] == "accuracy"]
    assert len(acc) == 6 * 2  # every lr
    for cell_id in {r["cell_id"] for r in acc}:
        mine = [r for r in acc if r["cell_id"] == cell_id]
        assert sorted(r["lr"] for r in mine) == [1e-3, 3e-3]
        assert sum(r["best"] for r in mine) == 1
        best = next(r for r in mine if r["best"])
        assert best["value"] == max(r["value"] for r in mine)
        assert 0 <= best["value"] <= 1
    state = {(r["mixer"], r["seq_len"]): r["value"] for r in rows if r["metric"] == "state_bytes"}
    # standard: a KV cache of 2 x seq_len x d_model fp32 values; linear: a constant (d x d)/H + d state
    assert state[("standard", 16)] == 2 * 16 * 16 * 4 and state[("standard", 32)] == 2 * 32 * 16 * 4
    assert state[("linear", 16)] == state[("linear", 32)]
    assert all(r["n_pairs"] in (2, 8) for r in rows)
    assert (tmp_path / "out" / "curves").is_dir() and len(list((tmp_path / "out" / "curves").iterdir())) == 6


def test_selective_copy_and_passkey_rows(tmp_path):
    suite = _suite([
        {"kind": "selective_copy", "modes": ["train"],
         "sweep": {"seq_len": [24], "batch": [16], "d_model": [16], "n_heads": [2]},
         "params": {**TINY, "n_tokens": 4, "vocab_size": 8}},
        {"kind": "passkey", "modes": ["train"], "description": "Passkey retrieval beyond the training length.",
         "sweep": {"seq_len": [128], "batch": [16], "d_model": [16], "n_heads": [2]},
         "params": {**TINY, "lrs": [3e-3], "eval_lengths": [64, 160, 256], "eval_examples": 8}},
    ], mixers=("standard",))
    rows = _run(tmp_path, suite)
    assert {r["status"] for r in rows} == {"ok"}
    sc = [r for r in rows if r["benchmark"] == "selective_copy" and r["metric"] == "accuracy"]
    assert len(sc) == 2 and sum(r["best"] for r in sc) == 1
    pk = [r for r in rows if r["benchmark"] == "passkey" and r["metric"] == "accuracy"]
    # the training length and the longer evaluation lengths (64 is shorter than training: not evaluated)
    assert sorted(r["eval_len"] for r in pk) == [128, 160, 256]
    assert all(r["seq_len"] == 128 and r["best"] for r in pk)
    # the report: each recall section under its heading, the passkey entry's description first
    report = write_report(tmp_path / "out").read_text()
    assert "## Benchmark `selective_copy` (selective_copy)\n\nTest accuracy" in report
    assert "## Benchmark `passkey` (passkey)\n\nPasskey retrieval beyond the training length.\n\nTest" in report


def test_params_profiles_override_per_device():
    entry = {"kind": "mqar", "modes": ["train"],
             "params": {"vocab_size": 64, "lrs": ["1e-3"],
                        "profiles": {"cuda": {"vocab_size": 8192, "train_examples": 100000}}}}
    suite = _suite([entry])
    cls = BENCHMARKS.get("mqar")
    from harness.config import BenchmarkEntry

    e = BenchmarkEntry.model_validate(entry)
    cpu, cuda = cls(e, suite, torch.device("cpu")), cls(e, suite, torch.device("cuda"))
    assert cpu.params.vocab_size == 64 and cuda.params.vocab_size == 8192
    assert cpu.params.lrs == [1e-3] and cuda.params.train_examples == 100000
    bad = copy.deepcopy(entry)
    bad["params"]["profiles"]["cuda"]["vocab_sise"] = 1
    with pytest.raises(ValueError, match="vocab_sise"):
        cls.Params.model_validate(bad["params"])


def test_non_causal_and_missing_mixers_are_recorded_not_raised(tmp_path):
    from torch import nn

    from architectures import Mixer, MixerSpec, Paper
    from architectures.registry import MIXERS, register_mixer

    class BidirOnly(Mixer):
        def __init__(self, d_model, n_heads, *, causal=True, impl=None):
            super().__init__(d_model, n_heads, causal=causal, impl=impl)
            self.proj = nn.Linear(d_model, d_model)

    spec = MixerSpec(family="test fixture", paper=Paper("none", "0000.00000", 2000), claimed_time=None,
                     claimed_memory=None, time_exponent=None, memory_exponent=None, state_exponent=None,
                     modes=frozenset({"bidirectional"}))
    register_mixer("_test_bidir_only", spec=spec)(BidirOnly)
    try:
        suite = Suite.model_validate({
            "suite": "t", "mixers": ["_test_bidir_only", "not_a_mixer"], "allow_missing_mixers": True,
            "benchmarks": [{"kind": "mqar", "modes": ["train"], "sweep": {"seq_len": [16], "batch": [8],
                                                                          "d_model": [16], "n_heads": [2]},
                            "params": {**TINY, "vocab_size": 32, "n_pairs": [2]}}]})
        rows = _run(tmp_path, suite)
    finally:
        MIXERS.unregister("_test_bidir_only")
    status = {r["mixer"]: r["status"] for r in rows}
    assert status == {"_test_bidir_only": "skipped", "not_a_mixer": "missing"}


def test_equivalence_of_flash_and_standard(tmp_path):
    suite = _suite([{"kind": "equivalence", "modes": ["forward", "train"],
                     "sweep": {"seq_len": [33], "batch": [2], "d_model": [32], "n_heads": [2]}}],
                   mixers=("standard", "flash", "linear"))
    rows = _run(tmp_path, suite)
    by = {(r["mixer"], r["mode"], r["metric"]): r for r in rows}
    assert by[("standard", "forward", None)]["status"] == "skipped"  # the reference itself
    # linear attention has parameters of the same names and shapes, but computes another function
    assert by[("linear", "forward", "max_rel_diff")]["value"] > 1e-2
    assert by[("flash", "forward", "max_rel_diff")]["value"] < 1e-5
    assert by[("flash", "train", "grad_max_rel_diff")]["value"] < 1e-5


def test_equivalence_detects_a_different_function(tmp_path):
    # sliding_window with a window shorter than the sequence has standard's parameters but not its function
    suite = Suite.model_validate({"suite": "t", "mixers": [{"name": "sliding_window", "hparams": {"window": 4}}],
                                  "benchmarks": [{"kind": "equivalence", "sweep": {"seq_len": [32], "batch": [1],
                                                                                   "d_model": [32],
                                                                                   "n_heads": [2]}}]})
    rows = _run(tmp_path, suite)
    rel = next(r for r in rows if r["metric"] == "max_rel_diff")
    assert rel["value"] > 1e-2


def test_claims_kind_has_no_cells_and_checks_its_file(tmp_path):
    suite = _suite([{"kind": "claims"}])
    assert plan(suite, torch.device("cpu")) == []
    with pytest.raises(ValueError, match="cannot read claims file"):
        BENCHMARKS.get("claims").Params.model_validate({"file": str(tmp_path / "none.yaml")})


def test_master_table_suite_without_perplexity_is_valid_and_fits_its_plan(tmp_path):
    """The committed suite's wiring, its perplexity entry set aside: which entries plan linformer and the floor."""
    raw = yaml.safe_load((REPO / "suites" / "master_table.yaml").read_text())
    assert {"scaling", "perplexity", "mqar", "claims", "equivalence"} <= {b["kind"] for b in raw["benchmarks"]}
    assert raw["allow_missing_mixers"] is True
    assert raw["mixers"] == ["standard", "flash", "sliding_window", "linear", "linformer", "reformer", "gla",
                             "deltanet", "mamba", "kda",
                             {"name": "sliding_window", "label": "no_context", "hparams": {"window": 1}}]
    raw["benchmarks"] = [b for b in raw["benchmarks"] if b["kind"] != "perplexity"]
    path = tmp_path / "master.yaml"
    path.write_text(yaml.safe_dump(raw))
    suite, _ = load_suite(path)
    cells = plan(suite, torch.device("cpu"))
    linformer = [c for c in cells if c.mixer == "linformer"]
    bidirectional = {b.get("name") or b["kind"] for b in raw["benchmarks"]
                     if (b.get("params") or {}).get("attention") == "bidirectional"}
    # linformer (not causal) is planned only in the bidirectional scaling entries: the 1024..4096 one and the long one
    assert {c.benchmark for c in linformer} == {"scaling_bidirectional", "scaling_long_bidirectional"} == bidirectional
    assert plan(suite, torch.device("cuda"))
    # without the perplexity entry the quality floor is planned nowhere: no other entry runs it
    assert not [c for c in plan(suite, torch.device("cpu")) if c.mixer == "no_context"]


def test_master_table_quality_floor_sees_no_other_token():
    """`no_context`, the floor of the Master Table's quality column, is planned only in its perplexity entry, and its
    layer's output at every position is unchanged when every other token changes (so the LM models the next byte
    from the current one and its position only)."""
    suite, _ = load_suite(REPO / "suites" / "master_table.yaml")
    floor = [c for c in plan(suite, torch.device("cpu")) if c.mixer == "no_context"]
    assert [(c.benchmark, c.mixer_name) for c in floor] == [("perplexity", "sliding_window")]
    torch.manual_seed(0)
    layer = architectures.create_mixer(floor[0].mixer_name, 64, 4, causal=True, **floor[0].hparams)
    x = torch.randn(2, 37, 64)
    y = layer(x)
    for t in (0, 18, 36):
        other = torch.randn_like(x)
        other[:, t] = x[:, t]  # every token but t replaced
        torch.testing.assert_close(layer(other)[:, t], y[:, t])


# ---- every shipped recall entry can build its data -----------------------------------------------------------------
def _shipped_recall_entries():
    from harness.benchmarks._recall import RecallBenchmark

    out = []
    for path in sorted((Path(__file__).resolve().parent.parent / "suites").glob("*.yaml")):
        suite, _ = load_suite(path)
        for entry in suite.benchmarks:
            if issubclass(BENCHMARKS.get(entry.kind), RecallBenchmark):
                out.append(pytest.param(path, entry.label, id=f"{path.stem}-{entry.label}"))
    return out


@pytest.mark.parametrize("path,label", _shipped_recall_entries())
def test_every_shipped_recall_entry_can_build_its_data(path, label):
    """The train and test sets (and longer evaluation sets) of every distinct task of the CPU plan: a task too small
    for its example counts fails every cell of a run at its first step (passkey at 128 bytes with 5 digits: only 190
    of 200 test examples differed from the 38400 training examples)."""
    suite, _ = load_suite(path)
    entry = next(e for e in suite.benchmarks if e.label == label)
    bench = BENCHMARKS.get(entry.kind)(entry, suite, torch.device("cpu"))
    built = set()
    for cell in plan(suite, torch.device("cpu"), benchmarks=label):
        key = (cell.seq_len, cell.seed, getattr(cell, "n_pairs", None))
        if key in built:
            continue
        built.add(key)
        train, test = bench.make_data(cell)
        assert len(train) == bench.params.train_examples and len(test) == bench.params.test_examples
        for n, data in bench.extra_evals(cell).items():
            assert data.seq_len == n
    assert built
