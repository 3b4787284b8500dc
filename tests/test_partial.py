"""A recall cell cut off mid-sweep resumes at the training where it stopped (harness.partial), and only then."""
import json

import pytest
import torch

import harness.benchmarks._recall as recall
from harness.config import Suite
from harness.partial import TrainingCache, cell_dir
from harness.results import read_rows
from harness.runner import plan, run_suite

CPU = torch.device("cpu")
ENTRY = {"kind": "mqar", "modes": ["train"], "sweep": {"seq_len": [16], "batch": [16], "d_model": [16], "n_heads": [2]},
         "params": {"train_examples": 64, "test_examples": 32, "epochs": 1.0, "eval_every": 2,
                    "lrs": [1e-3, 3e-3, 1e-2], "seeds": 2, "vocab_size": 32, "n_pairs": [2]}}


def _suite(entry=ENTRY):
    return Suite.model_validate({"suite": "t", "mixers": ["standard"], "time_budget_s": 120, "benchmarks": [entry]})


class Trainings:
    """Counts the trainings of recall cells (lr of each) and interrupts the one numbered ``stop_at``, as a SIGTERM or
    the end of a session would."""

    def __init__(self, monkeypatch, stop_at=None):
        self.lrs, self.stop_at, real = [], stop_at, recall.train

        def counting(model, batches, cfg, **kw):
            self.lrs.append(cfg.lr)
            if self.stop_at is not None and len(self.lrs) == self.stop_at:
                raise KeyboardInterrupt
            return real(model, batches, cfg, **kw)

        monkeypatch.setattr(recall, "train", counting)


def _rows(out):
    return [r for r in read_rows(out / "results.jsonl") if r["metric"] == "accuracy"]


def test_a_cell_cut_off_mid_sweep_resumes_at_the_training_it_was_in(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    out, suite = tmp_path / "out", _suite()
    (cell,) = plan(suite, CPU)
    # the whole cell in one go: 3 lrs + a second seed at the best
    whole = Trainings(monkeypatch)
    run_suite(suite, tmp_path / "ref", CPU, progress=False, write_report=False)
    assert len(whole.lrs) == 4
    reference = {(r["lr"], r["train_seed"]): r["value"] for r in _rows(tmp_path / "ref")}
    assert not cell_dir(tmp_path / "ref", cell.cell_id).exists(), "a committed cell keeps no partial trainings"

    cut = Trainings(monkeypatch, stop_at=3)  # stopped in its third training
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, out, CPU, progress=False, write_report=False)
    assert read_rows(out / "results.jsonl") == [], "nothing of the cell is committed"
    assert len(list(cell_dir(out, cell.cell_id).glob("*.json"))) == 2, "the two finished trainings are kept"

    again = Trainings(monkeypatch)
    run_suite(suite, out, CPU, resume=True, progress=False, write_report=False)
    assert again.lrs == [1e-2, again.lrs[-1]] and len(again.lrs) == 2, "only the third lr and the extra seed train"
    rows = _rows(out)
    assert {(r["lr"], r["train_seed"]): r["value"] for r in rows} == reference, "the same figures as in one go"
    reused = {r["lr"] for r in rows if r["reused_training"]}
    assert reused == {1e-3, 3e-3} and all(r["trained_on"] and r["trained_utc"] for r in rows if r["reused_training"])
    curves = json.loads(next((out / "curves").iterdir()).read_text())["lrs"]
    assert set(curves) >= {"0.001", "0.003", "0.01"}, "the reused trainings' curves are written with the cell"
    assert not cell_dir(out, cell.cell_id).exists(), "removed once the cell committed ok"


def test_a_kept_training_is_not_reused_when_what_it_depends_on_changed(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    out = tmp_path / "out"
    cut = Trainings(monkeypatch, stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        run_suite(_suite(), out, CPU, progress=False, write_report=False)
    assert cut.lrs == [1e-3, 3e-3]
    changed = {**ENTRY, "params": {**ENTRY["params"], "eval_every": 4}}  # another budget detail: stale
    again = Trainings(monkeypatch)
    run_suite(_suite(changed), out, CPU, resume=True, progress=False, write_report=False)
    assert again.lrs[:3] == [1e-3, 3e-3, 1e-2], "every lr trains again"
    assert not any(r["reused_training"] for r in _rows(out))


def test_training_cache_fingerprint_divergence_and_code_change(tmp_path, monkeypatch):
    cache = TrainingCache(tmp_path, "mqar/x[torch]/train/n=16", {"a": 1}, "cpu model")
    calls = []

    def train_one(lr, seed):
        calls.append(lr)
        if lr > 1:
            raise FloatingPointError("loss became nan at step 3")
        return {"final": {"accuracy": lr}}

    kept = cache.wrap(train_one, encode=dict, decode=dict)
    assert kept(0.5, 0) == {"final": {"accuracy": 0.5}}
    with pytest.raises(FloatingPointError):
        kept(2.0, 0)
    again = TrainingCache(tmp_path, "mqar/x[torch]/train/n=16", {"a": 1}, "other").wrap(train_one, dict, dict)
    assert again(0.5, 0)["reused"]["trained_on"] == "cpu model"
    with pytest.raises(FloatingPointError, match="nan at step 3"):
        again(2.0, 0)  # a kept divergence is a divergence again, not a new training
    assert calls == [0.5, 2.0]
    other = TrainingCache(tmp_path, "mqar/x[torch]/train/n=16", {"a": 2}, "cpu model").wrap(train_one, dict, dict)
    assert "reused" not in other(0.5, 0) and calls == [0.5, 2.0, 0.5], "another fingerprint trains again"
    assert TrainingCache(None, "c", {}, "d").get(0.5, 0) is None, "no run directory: nothing kept"


def test_the_code_hash_follows_the_source_files(tmp_path, monkeypatch):
    import harness.partial as partial

    module = tmp_path / "plugin_mixer.py"
    module.write_text("class M:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import plugin_mixer

    before = partial.code_hash(plugin_mixer.M)
    assert before == partial.code_hash(plugin_mixer.M) and before != partial.code_hash()
    module.write_text("class M:\n    x = 1\n")  # an edit to the mixer's file: its kept trainings are stale
    assert partial.code_hash(plugin_mixer.M) != before
