"""The perplexity benchmark: bits-per-byte math, seeded training, the lr sweep, masked-LM, runner output, quality."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import architectures
from architectures import Mixer, MixerSpec, Paper
from architectures.registry import MIXERS, register_mixer
from harness.analysis import quality_table
from harness.benchmarks import BENCHMARKS, Cell, RunContext, SkipCell
from harness.config import Suite, SuiteError, resolve_mixers
from harness.suites import load_suite
from harness.device import resolve_device
from harness.lm import (PREFIX_BYTE, ByteLogits, causal_bits_per_byte, causal_windows, fixed_mask, load_checkpoint,
                        masked_bits_per_byte)
from harness.results import read_rows
from harness.runner import plan, run_suite

CPU = resolve_device("cpu")
TINY = {"steps": 6, "warmup_steps": 2, "eval_every": 3, "eval_bytes": 1024, "curve_eval_bytes": 256, "eval_batch": 8}


class Uniform(nn.Module):
    """Logits 0 everywhere: every byte has probability 1/256."""

    def forward(self, tokens):
        return torch.zeros(*tokens.shape, 256)


class Bigram(nn.Module):
    """The next byte depends only on the current one: how much context a window gives cannot matter."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(257, 256)

    def forward(self, tokens):
        return self.table(tokens)


class MeanMix(Mixer):
    """A bidirectional-only fixture mixer: each position gets the mean of the whole sequence."""

    def __init__(self, d_model, n_heads, *, causal=False, impl=None):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x):
        return self.proj(x.mean(dim=1, keepdim=True).expand_as(x))


BIDIR_SPEC = MixerSpec(family="test fixture", paper=Paper("none", "0000.00000", 2000), claimed_time=None,
                       claimed_memory=None, time_exponent=None, memory_exponent=None, state_exponent=None,
                       modes=frozenset({"bidirectional"}))


@pytest.fixture(scope="module", autouse=True)
def bidirectional_fixture():
    register_mixer("_test_bidir", spec=BIDIR_SPEC)(MeanMix)
    yield
    MIXERS.unregister("_test_bidir")


# ---- bits-per-byte math -------------------------------------------------------------------------------------------

def test_a_uniform_model_scores_exactly_eight_bits_per_byte():
    text = bytes(range(256)) * 3 + b"tail"
    for L in (1, 7, 64, 1000):
        r = causal_bits_per_byte(Uniform(), text, L, batch_size=5)
        assert r["val_bpb"] == pytest.approx(8.0, abs=1e-6) and r["bytes"] == len(text)
        assert r["val_ppl"] == pytest.approx(256.0, rel=1e-6)
        assert r["val_loss"] == pytest.approx(math.log(256), rel=1e-7)
    r = masked_bits_per_byte(Uniform(), text, 16, mask_prob=0.15, seed=0)
    assert r["val_bpb"] == pytest.approx(8.0, abs=1e-6)
    assert r["bytes"] == int(fixed_mask(len(text), 0.15, 0).sum())


@pytest.mark.parametrize("n, L", [(1, 4), (10, 4), (12, 4), (13, 5), (3, 8)])
def test_windows_score_every_byte_once_with_full_context(n, L):
    scored = []
    for start, end, first in causal_windows(n, L):
        assert end - start == min(L, n), "every window but a short text's has L inputs"
        assert start <= first < end
        scored += range(first, end)
    assert scored == list(range(n))


def test_windowed_bpb_equals_the_direct_computation_for_a_context_free_model():
    text = "The quick brown fox jumps over the lazy dog. ".encode() * 7
    model = Bigram()
    stream = torch.tensor([PREFIX_BYTE] + list(text))
    direct = nn.functional.cross_entropy(model(stream[None, :-1])[0], stream[1:]).item() / math.log(2)
    for L in (5, 16, 64, 1024):
        assert causal_bits_per_byte(model, text, L)["val_bpb"] == pytest.approx(direct, rel=1e-6)


# ---- the benchmark ------------------------------------------------------------------------------------------------

def bench(params=None, modes=("causal_lm",), mixers=("standard",), sweep=None, device=CPU):
    suite = Suite.model_validate({
        "suite": "t", "mixers": list(mixers), "benchmarks": [{
            "kind": "perplexity", "modes": list(modes),
            "sweep": sweep or {"seq_len": [32], "batch": [4], "d_model": [32], "n_heads": [2]},
            "params": {**TINY, **(params or {})}}]})
    entry = suite.benchmarks[0]
    return BENCHMARKS.get("perplexity")(entry, suite, device), resolve_mixers(suite)


def one_cell(b, mixers, mixer="standard", mode="causal_lm"):
    return next(c for c in b.cells(mixers) if c.mixer == mixer and c.mode == mode)


def by_metric(rows, best=True):
    return {r["metric"]: r for r in rows if r["best"] == best}


def test_same_seed_same_val_bpb_and_rows(tmp_path):
    b, mixers = bench()
    cell = one_cell(b, mixers)
    r1 = b.run_cell(cell, RunContext(CPU, None, {}, out=tmp_path / "a"))
    r2 = b.run_cell(cell, RunContext(CPU, None, {}, out=tmp_path / "b"))
    m1, m2 = by_metric(r1), by_metric(r2)
    assert m1["val_bpb"]["value"] == m2["val_bpb"]["value"]
    assert 4.0 < m1["val_bpb"]["value"] < 8.5, "a few steps from 8 bits (uniform)"
    assert m1["val_ppl"]["value"] == pytest.approx(2 ** m1["val_bpb"]["value"])
    assert m1["val_loss"]["value"] == pytest.approx(m1["val_bpb"]["value"] * math.log(2))
    assert m1["train_tokens"]["value"] == 6 * 4 * 32 and m1["val_bytes"]["value"] == 1024
    assert m1["tokens_per_s"]["value"] > 0 and m1["lr"]["value"] == 3e-3
    assert {r["objective"] for r in r1} == {"causal_lm"}


def test_lr_sweep_records_every_lr_and_keeps_the_best(tmp_path):
    b, mixers = bench({"lrs": [1e-2, 1e-4]})
    rows = b.run_cell(one_cell(b, mixers), RunContext(CPU, None, {}, out=tmp_path))
    bpb = {r["lr"]: r for r in rows if r["metric"] == "val_bpb"}
    assert set(bpb) == {1e-2, 1e-4}
    best = min(bpb.values(), key=lambda r: r["value"])
    assert best["best"] and sum(r["best"] for r in bpb.values()) == 1
    assert best["lr"] == 1e-2, "1e-4 for 6 steps barely moves from uniform"
    for r in rows:
        assert (r["checkpoint"] is not None) == r["best"], "one checkpoint: the best lr's"
        assert (tmp_path / r["curve"]).exists()
    curve = json.loads((tmp_path / best["curve"]).read_text())
    assert [e["step"] for e in curve["train"]] == list(range(1, 7))
    assert [e["step"] for e in curve["evals"]] == [3, 6]
    model, meta = load_checkpoint(tmp_path / best["checkpoint"])
    assert meta["objective"] == "causal_lm" and meta["seq_len"] == 32 and meta["lr"] == 1e-2
    assert len(meta["val_text"].encode()) == 1024
    again = causal_bits_per_byte(model, meta["val_text"].encode(), 32)["val_bpb"]
    assert again == pytest.approx(best["value"], rel=1e-6), "the checkpoint is the scored model"


def test_bidirectional_only_mixers_get_masked_lm_against_a_bidirectional_standard(tmp_path):
    b, mixers = bench(mixers=("_test_bidir", "linear", "sliding_window"))
    cells = [(c.mixer, c.mode) for c in b.cells(mixers)]
    assert cells == [("standard", "masked_lm"), ("_test_bidir", "masked_lm"), ("linear", "causal_lm"),
                     ("sliding_window", "causal_lm")], "the baseline is added even when not listed"
    b2, mixers2 = bench(modes=("causal_lm", "masked_lm"), mixers=("standard", "sliding_window"))
    assert [(c.mixer, c.mode) for c in b2.cells(mixers2)] == [
        ("standard", "causal_lm"), ("standard", "masked_lm"), ("sliding_window", "causal_lm")]

    rows = b.run_cell(one_cell(b, mixers, "_test_bidir", "masked_lm"), RunContext(CPU, None, {}, out=tmp_path))
    m = by_metric(rows)
    assert m["val_bpb"]["objective"] == "masked_lm" and 3.0 < m["val_bpb"]["value"] < 8.5
    assert m["val_bytes"]["value"] == int(fixed_mask(1024, 0.15, 0).sum())
    model, meta = load_checkpoint(tmp_path / m["val_bpb"]["checkpoint"])
    assert meta["objective"] == "masked_lm" and model.cfg.causal is False and model.cfg.vocab_size == 257
    again = masked_bits_per_byte(ByteLogits(model), meta["val_text"].encode(), 32, 0.15, seed=0)["val_bpb"]
    assert again == pytest.approx(m["val_bpb"]["value"], rel=1e-6)

    causal = Cell("perplexity", "perplexity", "_test_bidir", "_test_bidir", "torch", "causal_lm", 32, 4, 32, 2,
                  "float32", 0)
    with pytest.raises(SkipCell, match="causal_lm needs a causal mixer"):
        b.run_cell(causal, RunContext(CPU, None, {}, out=tmp_path))


def test_device_profiles_override_training_params():
    b, _ = bench({"profiles": {"cuda": {"steps": 1000, "lrs": [1e-3, 3e-3], "n_layers": 4}}})
    assert (b.training.steps, b.training.n_layers) == (6, 2)
    b_gpu, _ = bench({"profiles": {"cuda": {"steps": 1000, "lrs": [1e-3, 3e-3], "n_layers": 4}}},
                     device=torch.device("cuda"))
    assert (b_gpu.training.steps, b_gpu.training.lrs, b_gpu.training.n_layers) == (1000, [1e-3, 3e-3], 4)
    assert b_gpu.training.eval_bytes == 1024, "what the profile does not name stays"


def test_suite_validation_names_the_problem(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("suite: s\nmixers: [standard]\nbenchmarks:\n  - kind: perplexity\n    params:\n"
                    "      stepz: 3\n      corpus: {kind: file}\n")
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    text = "\n".join(err.value.problems)
    assert "modes: unknown mode(s) ['forward']" in text and "expected some of ['causal_lm', 'masked_lm']" in text
    assert "params.stepz: unknown key" in text and "needs `path`" in text


def test_the_shipped_suite_is_valid():
    """Every registered mixer gets a quality figure (causal ones as causal LMs, bidirectional-only ones as masked
    LMs beside a masked-LM standard), with the floor; the CPU profile sweeps >= 3 lrs and runs 2 seeds of the best."""
    suite, _ = load_suite(Path(__file__).parent.parent / "suites" / "perplexity.yaml")
    cells = plan(suite, CPU)
    causal = {c.mixer for c in cells if c.mode == "causal_lm"}
    for name in [n for n in architectures.list_mixers() if not n.startswith("_")]:  # tests register _test_* ones
        modes = architectures.get_mixer(name).spec.modes
        if "causal" in modes:
            assert name in causal, name
        else:
            assert any(c.mixer == name and c.mode == "masked_lm" for c in cells), name
    assert "no_context" in causal and any(c.mixer == "standard" and c.mode == "masked_lm" for c in cells)
    assert {(c.seq_len, c.batch, c.d_model) for c in cells} == {(256, 16, 128)}
    entry = suite.benchmarks[0]
    training = BENCHMARKS.get("perplexity")(entry, suite, CPU).training
    assert len(training.lrs) >= 3 and training.seeds == 2


# ---- the runner, end to end ----------------------------------------------------------------------------------------

def test_runner_on_the_embedded_corpus_and_a_local_file(tmp_path):
    suite_dir = tmp_path / "suites"
    (suite_dir / "data").mkdir(parents=True)
    (suite_dir / "data" / "story.txt").write_text("Once upon a time, a byte met another byte. " * 200)
    text = f"""
suite: tiny_ppl
mixers: [standard, linear]
benchmarks:
  - kind: perplexity
    name: embedded
    modes: [causal_lm]
    sweep: {{seq_len: [32], batch: [4], d_model: [32], n_heads: [2]}}
    params: {json.dumps(TINY)}
  - kind: perplexity
    name: local
    description: A local text file.
    mixers: [standard]
    modes: [causal_lm]
    sweep: {{seq_len: [32], batch: [4], d_model: [32], n_heads: [2]}}
    params: {json.dumps({**TINY, "eval_bytes": None, "corpus": {"kind": "file", "path": "data/story.txt"}})}
"""
    (suite_dir / "tiny.yaml").write_text(text)
    suite, _ = load_suite(suite_dir / "tiny.yaml")
    out = tmp_path / "out"
    summary = run_suite(suite, out, CPU, suite_path=suite_dir / "tiny.yaml", progress=False)
    assert summary.statuses == {"ok": 3}
    rows = read_rows(out / "results.jsonl")
    corpora = {r["benchmark"]: r["corpus"] for r in rows}
    assert corpora["embedded"].startswith("pydoc_data.topics")
    assert corpora["local"] == f"file {(suite_dir / 'data' / 'story.txt').resolve()}"
    local_bytes = next(r["value"] for r in rows if r["benchmark"] == "local" and r["metric"] == "val_bytes")
    n = len(("Once upon a time, a byte met another byte. " * 200).encode())
    assert local_bytes == n - math.floor(0.9 * n)
    for r in rows:
        if r["best"] and r["metric"] == "val_bpb":
            assert (out / r["checkpoint"]).exists() and (out / r["curve"]).exists()
    report = (out / "report.md").read_text()
    assert "## Benchmark `embedded` (perplexity)" in report and "## Benchmark `local` (perplexity)" in report
    # an entry's description under its heading (only the entry that has one)
    assert report.split("## Benchmark `local` (perplexity)\n\n")[1].startswith("A local text file.\n")
    assert report.count("A local text file.") == 1
    assert "**Quality** = 100 × ppl(`standard`) / ppl(mixer)" in report
    assert (out / "plots" / "embedded-curves.png").exists()


# ---- quality ------------------------------------------------------------------------------------------------------

def rows_for(mixer, mode, bpb, lr=1e-3, best=True, seq_len=256):
    base = {"benchmark": "p", "kind": "perplexity", "mixer": mixer, "mixer_name": mixer, "impl": "torch",
            "mode": mode, "seq_len": seq_len, "batch": 16, "d_model": 128, "n_heads": 4, "dtype": "float32",
            "seed": 0, "status": "ok", "lr": lr, "best": best}
    return [{**base, "metric": "val_bpb", "value": bpb}, {**base, "metric": "val_ppl", "value": 2 ** bpb},
            {**base, "metric": "lr", "value": lr}]


def test_quality_is_the_perplexity_ratio_to_the_baseline():
    df = pd.DataFrame(rows_for("standard", "causal_lm", 2.0) + rows_for("linear", "causal_lm", 2.1)
                      + rows_for("linear", "causal_lm", 1.0, lr=1e-1, best=False)  # not the best: ignored
                      + rows_for("kda", "causal_lm", 1.9)
                      + rows_for("standard", "masked_lm", 3.0) + rows_for("_test_bidir", "masked_lm", 3.5)
                      + rows_for("linear", "causal_lm", 2.0, seq_len=512)  # no baseline at this length
                      + [{"benchmark": "s", "kind": "scaling", "mixer": "x", "status": "ok", "metric": "time_s",
                          "value": 1.0}])
    q = quality_table(df).set_index(["mode", "seq_len", "mixer"])["quality"]
    assert q[("causal_lm", 256, "standard")] == pytest.approx(100.0)
    assert q[("causal_lm", 256, "linear")] == pytest.approx(100 * 2 ** 2.0 / 2 ** 2.1)  # 93.30
    assert q[("causal_lm", 256, "kda")] == pytest.approx(100 * 2 ** 0.1)  # better than the baseline: > 100
    assert q[("masked_lm", 256, "_test_bidir")] == pytest.approx(100 * 2 ** -0.5), "against masked standard"
    assert math.isnan(q[("causal_lm", 512, "linear")])
    assert quality_table(df, baseline="linear").set_index(["mode", "seq_len", "mixer"]).loc[
        ("causal_lm", 256, "standard"), "quality"] == pytest.approx(100 * 2 ** 0.1)
    assert quality_table(pd.DataFrame()).empty


def test_lr_sweep_names_a_best_lr_at_the_edge_of_the_grid():
    import pandas as pd

    from harness.benchmarks._perplexity_report import edge_note

    sweep = pd.DataFrame({"mixer": ["a"] * 3 + ["b"] * 3, "lr": [1e-3, 3e-3, 1e-2] * 2,
                          "best": [False, True, False, False, False, True]})
    assert edge_note(sweep) == ["Best at an edge of the sweep (0.001-0.01), so a better lr may lie outside it: "
                                "b (0.01).", ""]
    assert edge_note(sweep.assign(best=[False, True, False, False, True, False])) == []
