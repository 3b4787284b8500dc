"""The quality and recall protocol: the learning-rate sweep with seeds (``training.lr_sweep``) and the rows the
benchmarks write with it, the inconclusive rule of quality verdicts (``analysis.interval_verdict``), and the shipped
suites' recall configurations (Zoology's three, every window shorter than the sequence)."""
from pathlib import Path

import pandas as pd
import pytest
import torch

import architectures
from harness.benchmarks import BENCHMARKS
from harness.analysis import INCONCLUSIVE, interval_verdict, quality_table
from harness.claims import FAILS, HOLDS, Figure, QualityCell, Tolerances, quality_verdict
from harness.config import Suite
from harness.results import read_rows
from harness.runner import plan, run_suite
from harness.suites import load_suite
from harness.training import lr_sweep

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


# ---- the sweep --------------------------------------------------------------------------------------------------

def _fake(scores, diverge=()):
    """train_one whose validation figure is scores[lr] + 0.01 * seed; lrs in `diverge` raise."""
    calls = []

    def train_one(lr, seed):
        calls.append((lr, seed))
        if lr in diverge:
            raise FloatingPointError(f"loss nan at lr {lr}")
        return {"bpb": scores[lr] + 0.01 * seed}
    return train_one, calls


def test_sweep_picks_the_best_by_validation_then_runs_seeds_at_it():
    train_one, calls = _fake({1e-3: 2.5, 3e-3: 2.1, 1e-2: 2.3})
    runs = lr_sweep(train_one, [1e-2, 1e-3, 3e-3], seed=5, seeds=3, badness=lambda o: o["bpb"])
    # every lr at the first seed (ascending), then seeds 6 and 7 at the best lr: the best run counts as seed 1
    assert calls == [(1e-3, 5), (3e-3, 5), (1e-2, 5), (3e-3, 6), (3e-3, 7)]
    assert [(r.lr, r.seed, r.role, r.best) for r in runs] == [
        (1e-3, 5, "sweep", False), (3e-3, 5, "sweep", True), (1e-2, 5, "sweep", False),
        (3e-3, 6, "seed", True), (3e-3, 7, "seed", True)]


def test_sweep_ties_keep_the_smaller_lr_and_diverged_lrs_are_never_best():
    train_one, _ = _fake({1e-3: 2.0, 3e-3: 2.0, 1e-2: 0.1}, diverge=(1e-2,))
    runs = lr_sweep(train_one, [1e-3, 3e-3, 1e-2], seed=0, seeds=1, badness=lambda o: o["bpb"])
    assert [r.lr for r in runs if r.best] == [1e-3]
    bad = next(r for r in runs if r.lr == 1e-2)
    assert bad.diverged and "nan" in bad.error and not bad.best and bad.outcome is None
    train_one, _ = _fake({1e-3: 1.0}, diverge=(1e-3,))
    with pytest.raises(FloatingPointError, match="every learning rate"):
        lr_sweep(train_one, [1e-3], seed=0, seeds=2, badness=lambda o: o["bpb"])
    with pytest.raises(ValueError):
        lr_sweep(train_one, [1e-3], seed=0, seeds=0, badness=lambda o: o["bpb"])


def test_mqar_rows_carry_lr_seed_and_best_flags(tmp_path):
    """Through the runner: 3 lrs at seed 0, a second seed at the best lr, every training's rows flagged."""
    params = {"train_examples": 64, "test_examples": 32, "epochs": 1.0, "eval_every": 2, "vocab_size": 32,
              "n_pairs": [2], "lrs": [1e-3, 3e-3, 1e-2], "seeds": 2,
              "hparams_by_length": {"sliding_window": {16: {"window": 4}}}}
    suite = Suite.model_validate({"suite": "t", "mixers": ["sliding_window"], "time_budget_s": 120, "benchmarks": [
        {"kind": "mqar", "modes": ["train"], "sweep": {"seq_len": [16], "batch": [16], "d_model": [16],
                                                      "n_heads": [2]}, "params": params}]})
    torch.set_num_threads(1)
    run_suite(suite, tmp_path / "out", CPU, progress=False, write_report=False)
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    assert {r["status"] for r in rows} == {"ok"}
    assert all(r["hparams"]["window"] == 4 for r in rows)  # the per-length window, recorded
    acc = [r for r in rows if r["metric"] == "accuracy"]
    sweep = [r for r in acc if r["sweep_role"] == "sweep"]
    seeds = [r for r in acc if r["sweep_role"] == "seed"]
    assert sorted(r["lr"] for r in sweep) == [1e-3, 3e-3, 1e-2] and {r["train_seed"] for r in sweep} == {0}
    best = [r for r in sweep if r["best"]]
    assert len(best) == 1
    key = lambda r: (-r["value"], next(x["value"] for x in rows if x["metric"] == "test_loss"  # noqa: E731
                                       and x["lr"] == r["lr"] and x["train_seed"] == 0))
    assert best[0] is min(sweep, key=key)  # the best by test accuracy, ties by loss
    assert [(r["lr"], r["train_seed"], r["best"]) for r in seeds] == [(best[0]["lr"], 1, True)]
    assert all(r["steps_budget"] == 4 and r["train_examples"] == 64 for r in acc)


def test_perplexity_rows_carry_lr_seed_best_and_budget(tmp_path):
    params = {"steps": 4, "warmup_steps": 1, "eval_every": 0, "eval_bytes": 512, "curve_eval_bytes": 128,
              "eval_batch": 8, "lrs": [1e-3, 3e-3, 1e-2], "seeds": 2}
    suite = Suite.model_validate({"suite": "t", "mixers": ["standard"], "time_budget_s": 120, "benchmarks": [
        {"kind": "perplexity", "modes": ["causal_lm"], "sweep": {"seq_len": [16], "batch": [2], "d_model": [16],
                                                                "n_heads": [2]}, "params": params}]})
    torch.set_num_threads(1)
    run_suite(suite, tmp_path / "out", CPU, progress=False, write_report=False)
    bpb = [r for r in read_rows(tmp_path / "out" / "results.jsonl") if r["metric"] == "val_bpb"]
    assert [(r["lr"], r["train_seed"], r["sweep_role"]) for r in bpb][:3] == [(1e-3, 0, "sweep"), (3e-3, 0, "sweep"),
                                                                             (1e-2, 0, "sweep")]
    best = min(bpb[:3], key=lambda r: r["value"])
    assert [r["best"] for r in bpb[:3]] == [r is best for r in bpb[:3]]
    assert [(r["lr"], r["train_seed"], r["sweep_role"], r["best"]) for r in bpb[3:]] == [(best["lr"], 1, "seed", True)]
    assert best["checkpoint"] and bpb[3]["checkpoint"] is None  # the checkpoint is the best lr's first seed
    assert bpb[3]["value"] != best["value"]  # another seed: other initial weights and batches
    assert all(r["steps"] == 4 and r["tokens_per_step"] == 32 for r in bpb)
    assert all((tmp_path / "out" / r["curve"]).exists() for r in bpb)


# ---- the inconclusive rule --------------------------------------------------------------------------------------

def test_interval_verdict():
    assert interval_verdict(96.0, 97.5, 95.0, 101.0) == HOLDS  # the whole spread inside
    assert interval_verdict(90.0, 92.0, 95.0, 101.0) == FAILS  # entirely below
    assert interval_verdict(102.0, 103.0, 95.0, 101.0) == FAILS  # entirely above
    assert interval_verdict(94.0, 96.0, 95.0, 101.0) == INCONCLUSIVE  # straddles the lower edge
    assert interval_verdict(100.5, 101.5, 95.0, 101.0) == INCONCLUSIVE  # straddles the upper edge
    assert interval_verdict(96.0, 96.0, 95.0) == HOLDS and interval_verdict(94.0, 94.0, 95.0) == FAILS
    with pytest.raises(ValueError):
        interval_verdict(2.0, 1.0)


@pytest.mark.parametrize("lo, hi, expected", [(93.0, 94.0, HOLDS), (91.0, 91.9, FAILS), (91.5, 92.5, INCONCLUSIVE),
                                              (97.5, 98.5, INCONCLUSIVE), (99.0, 99.5, FAILS)])
def test_quality_verdict_follows_the_spread_over_seeds(lo, hi, expected):
    cell = QualityCell(as_written="~95%", percent=95, kind="approx")  # 92..98 with the default 3 points
    fig = Figure((lo + hi) / 2, "x", {"lo": lo, "hi": hi, "seeds": 2})
    assert quality_verdict(cell, fig, Tolerances())[0] == expected
    at_least = QualityCell(as_written="93%+", percent=93, kind="at_least")  # >= 92 with the default 1 point
    v = quality_verdict(at_least, fig, Tolerances())[0]
    assert v == (HOLDS if lo >= 92 else FAILS if hi < 92 else INCONCLUSIVE)


def test_quality_table_pairs_seeds_and_reports_the_spread():
    def rows(mixer, seed, bpb, best=True, lr=3e-3):
        base = {"benchmark": "p", "kind": "perplexity", "mixer": mixer, "mixer_name": mixer, "impl": "torch",
                "mode": "causal_lm", "seq_len": 256, "batch": 16, "d_model": 128, "n_heads": 4,
                "dtype": "float32", "seed": 0, "status": "ok", "lr": lr, "best": best, "train_seed": seed,
                "steps": 300}
        return [{**base, "metric": "val_bpb", "value": bpb}, {**base, "metric": "val_ppl", "value": 2 ** bpb},
                {**base, "metric": "train_tokens", "value": 1228800}, {**base, "metric": "model_params",
                                                                         "value": 500000}]
    df = pd.DataFrame(rows("standard", 0, 2.0) + rows("standard", 1, 2.1) + rows("linear", 0, 2.2)
                      + rows("linear", 1, 2.2) + rows("linear", 0, 1.0, best=False, lr=1e-2))
    q = quality_table(df).set_index("mixer")
    assert q.loc["linear", "seeds"] == 2 and q.loc["linear", "steps"] == 300
    assert q.loc["linear", "quality_min"] == pytest.approx(100 * 2 ** -0.2)  # seed 0 against standard's seed 0
    assert q.loc["linear", "quality_max"] == pytest.approx(100 * 2 ** -0.1)  # seed 1 against standard's seed 1
    assert q.loc["linear", "quality"] == pytest.approx((100 * 2 ** -0.2 + 100 * 2 ** -0.1) / 2)
    assert q.loc["linear", "train_tokens"] == 1228800 and q.loc["linear", "model_params"] == 500000


# ---- the shipped suites -----------------------------------------------------------------------------------------

ZOOLOGY = {(64, 4), (128, 8), (256, 16)}


def _context(cell) -> int | None:
    """How far back a cell's mixer sees, where a hyperparameter bounds it (a window; Transformer-XL's segment plus
    memory); None for mixers without one."""
    h = {**architectures.get_mixer(cell.mixer_name).spec.default_hparams, **cell.hparams}
    if "window" in h:
        return h["window"]
    if cell.mixer_name == "transformer_xl":
        return h["segment_len"] + h["mem_len"]
    return None


@pytest.mark.parametrize("name", ["recall", "master_table"])
def test_mqar_windows_are_shorter_than_the_sequence(name):
    suite, _ = load_suite(REPO / "suites" / f"{name}.yaml")
    cells = [c for c in plan(suite, CPU) if c.kind == "mqar"]
    assert cells and {(c.seq_len, c.n_pairs) for c in cells} <= ZOOLOGY
    assert {c.d_model for c in cells} in ({64}, {128})  # one width
    for c in cells:
        context = _context(c)
        assert context is None or context < c.seq_len, (c.cell_id, context)
    assert any(_context(c) is not None for c in cells)
    entry = next(e for e in suite.benchmarks if e.kind == "mqar")
    bench = BENCHMARKS.get("mqar")(entry, suite, CPU)
    assert len(bench.params.lrs) >= 3


def test_recall_suite_covers_every_causal_mixer_and_the_master_methods():
    suite, _ = load_suite(REPO / "suites" / "recall.yaml")
    cells = plan(suite, CPU)
    mqar = {(c.mixer_name, c.seq_len, c.n_pairs) for c in cells if c.kind == "mqar"}
    causal = [n for n in architectures.list_mixers()
              if not n.startswith("_") and "causal" in architectures.get_mixer(n).spec.modes]
    assert {(m, n, p) for m in causal for n, p in ZOOLOGY} <= mqar
    master, _ = load_suite(REPO / "suites" / "master_table.yaml")
    methods = {c.mixer for c in plan(master, CPU) if c.kind == "mqar"}
    for kind in ("selective_copy", "passkey"):
        mine = [c for c in cells if c.kind == kind]
        assert {c.mixer for c in mine} >= methods, kind
        for c in mine:
            context = _context(c)
            assert context is None or context < c.seq_len, (c.cell_id, context)


@pytest.mark.parametrize("name", ["recall", "master_table", "perplexity"])
def test_every_planned_training_cell_builds_its_mixer(name):
    """A suite's cells with the hparams they run with (hparams_by_length included) construct their mixer at the
    cell's width and heads (on the meta device: no memory), so no cell of a long run is an error at its start."""
    suite, _ = load_suite(REPO / "suites" / f"{name}.yaml")
    for c in plan(suite, CPU):
        if c.missing or c.kind in ("scaling", "equivalence"):
            continue
        modes = architectures.get_mixer(c.mixer_name).spec.modes
        if c.kind != "perplexity" and "causal" not in modes:
            continue  # recorded as skipped: the recall tasks are autoregressive
        causal = c.mode != "masked_lm"
        with torch.device("meta"):
            architectures.create_mixer(c.mixer_name, c.d_model, c.n_heads, causal=causal, **c.hparams)


def test_recall_gap_verdict_follows_the_spread_over_seeds():
    """The `below` claim (a method's MQAR accuracy under a reference's by more than a margin) over seeds."""
    from harness.claims import Claim, _below

    class Run:  # the two methods RunData offers that the check reads
        def __init__(self, df):
            self.df = df

        def rows_of_kind(self, kind):
            return self.df

        def entries(self, kind):
            return [kind]

    def rows(mixer, accs):
        return [{"benchmark": "mqar", "mixer": mixer, "status": "ok", "metric": "accuracy", "value": a, "best": True,
                 "lr": 1e-3, "seq_len": 64, "n_pairs": 4, "d_model": 64, "seed": 0, "train_seed": s}
                for s, a in enumerate(accs)]
    claim = Claim(id="weaker", method="mamba", text="", check="below", benchmark="mqar", metric="accuracy",
                  against="standard", margin=0.05)
    verdict = lambda m, s: _below(Run(pd.DataFrame(rows("mamba", m) + rows("standard", s))), claim)["verdict"]  # noqa
    assert verdict([0.5, 0.6], [0.99, 1.0]) == HOLDS
    assert verdict([0.97, 0.99], [0.99, 1.0]) == FAILS  # gap 0.00..0.03
    assert verdict([0.90, 0.97], [0.99, 1.0]) == INCONCLUSIVE  # gap 0.02..0.10 straddles the 0.05 margin
    assert verdict([0.9], [1.0]) == HOLDS  # one seed: a plain verdict
