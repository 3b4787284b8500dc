"""Mechanics of the optimisation benchmarks (kv_cache, quantization, speculative, checkpointing, precision,
components): each property can fail. Timings are never asserted; the end-to-end test runs a tiny suite."""
import copy
from pathlib import Path

import pytest
import torch

from architectures.backbone import DecoderLM, LMConfig
from harness.benchmarks._optim import linear_weights, storage_bytes, storage_dtypes
from harness.benchmarks.checkpointing import peak_train_bytes
from harness.benchmarks.components import POSITION_VARIANTS, position_config
from harness.benchmarks.kv_cache import state_after, state_nbytes
from harness.benchmarks.quantization import (decode_bits_per_byte, int8_cache, quantize_weights, step_int8_cache)
from harness.benchmarks.speculative import speculative_generate, target_generate
from harness.lm import causal_bits_per_byte

POSITIONS = ["sinusoidal", "learned", "rope", "alibi"]


def lm(dtype=torch.float32, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(d_model=60, n_heads=3, n_layers=2, max_positions=128)
    cfg.update(kw)
    return DecoderLM(LMConfig(**cfg)).to(dtype).eval()


# ---- kv_cache ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mixer", ["standard", "alibi"])
def test_cached_decode_equals_recomputing_the_prefix(mixer):
    model = lm(torch.float64, mixer=mixer)
    tokens = torch.randint(0, 256, (2, 40))
    state = model.init_state(2)
    for t in range(39):  # every position: the cached step's logits = a fresh forward over the prefix
        logits, state = model.step(tokens[:, t], state)
        torch.testing.assert_close(logits, model(tokens[:, :t + 1])[:, -1], rtol=1e-9, atol=1e-9)
    # the state the benchmark builds (extend where the mixer has it) is the same cache
    built = state_after(model, tokens[:, :39])
    for a, b in zip(built["layers"], state["layers"]):
        torch.testing.assert_close(a["k"], b["k"])
        torch.testing.assert_close(a["v"], b["v"])
    assert state_nbytes(built["layers"]) == 2 * 2 * 2 * 39 * 60 * 8  # (k, v) x layers x batch x n x d x fp64


# ---- speculative ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_speculative_greedy_output_equals_target_greedy_token_for_token(k):
    target = lm(torch.float64, seed=1, n_layers=3)
    draft = lm(torch.float64, seed=2, d_model=32, n_heads=2, n_layers=1)
    prompt = torch.randint(0, 256, (9,))
    ref = target_generate(target, prompt, 40)
    stats = speculative_generate(target, draft, prompt, 40, k, greedy=True)
    assert stats.tokens == ref
    assert stats.proposed == k * stats.rounds and 0 <= stats.accepted <= stats.proposed


def test_speculative_with_the_target_as_its_own_draft_accepts_everything():
    target = lm(torch.float64, seed=3)
    prompt = torch.randint(0, 256, (5,))
    for greedy in (True, False):
        gen = torch.Generator().manual_seed(0)
        stats = speculative_generate(target, copy.deepcopy(target), prompt, 30, 4, greedy=greedy, gen=gen)
        assert stats.accepted == stats.proposed and len(stats.tokens) == 30
        if greedy:
            assert stats.tokens == target_generate(target, prompt, 30)


def test_speculative_sampling_first_token_follows_the_target_distribution():
    """Leviathan et al.'s rejection rule: the first new token is distributed as the target's p, whatever the draft.
    A 2-token world (logits forced by a bias on the head) makes the check exact enough with few samples."""
    target, draft = lm(torch.float64, seed=4), lm(torch.float64, seed=5)
    prompt = torch.randint(0, 256, (4,))
    with torch.no_grad():
        p = torch.softmax(target(prompt[None])[0, -1], -1)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(256)
    n = 200
    for _ in range(n):
        counts[speculative_generate(target, draft, prompt, 1, 2, greedy=False, gen=gen).tokens[0]] += 1
    # total variation between the empirical and the target distribution, against the same for target sampling
    tv = 0.5 * (counts / n - p).abs().sum()
    direct = torch.zeros(256)
    for _ in range(n):
        direct[target_generate(target, prompt, 1, greedy=False, gen=gen)[0]] += 1
    tv_direct = 0.5 * (direct / n - p).abs().sum()
    assert tv < tv_direct + 0.1, (float(tv), float(tv_direct))


# ---- quantization --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits,dtype", [(8, "int8"), (4, "uint8")])
def test_quantized_weights_are_stored_in_int8_or_packed_int4(bits, dtype):
    pytest.importorskip("optimum.quanto")
    model = lm(d_model=64, n_heads=2)
    numel = sum(w.numel() for w in linear_weights(model))
    fp32 = sum(storage_bytes(w) for w in linear_weights(model))
    assert fp32 == 4 * numel
    quantize_weights(model, bits)
    weights = linear_weights(model)
    data = sum(storage_bytes(w) for w in weights)
    assert all(dtype in storage_dtypes(w) for w in weights)
    assert all("float32" not in storage_dtypes(w) or len(storage_dtypes(w)) > 1 for w in weights)
    # data bytes: numel * bits / 8, plus one scale (+ shift for int4) per output row of 64 weights
    rows = sum(w.shape[0] for w in weights)
    assert numel * bits / 8 <= data <= numel * bits / 8 + rows * (4 if bits == 8 else 8) * 1.01
    x = torch.randint(0, 256, (1, 16))
    assert torch.isfinite(model(x)).all()


def test_int8_kv_cache_stores_int8_and_decodes_close_to_the_fp32_cache():
    model = lm()
    tokens = torch.randint(0, 256, (1, 40))
    state = state_after(model, tokens[:, :39])
    q = int8_cache(state)
    assert q["layers"][0]["k_q"].dtype == torch.int8
    assert state_nbytes(q["layers"]) < 0.3 * state_nbytes(state["layers"])  # 1 byte + a 2-byte scale per 20 values
    exact, _ = model.step(tokens[:, 39], state)
    approx, q2 = step_int8_cache(model, tokens[:, 39], q)
    assert q2["layers"][0]["k_q"].shape[1] == 40
    assert (approx - exact).abs().max() < 0.05 * exact.abs().max()
    # decoding with an exact cache reproduces the parallel evaluation's bits per byte
    text = b"def f(x):\n    return x + 1\n" * 3
    with torch.no_grad():
        bpb = decode_bits_per_byte(model.step, lambda: model.init_state(1), text, 16)
    assert bpb == pytest.approx(causal_bits_per_byte(model, text, 16)["val_bpb"], rel=1e-5)


# ---- checkpointing -------------------------------------------------------------------------------------------------

def test_activation_checkpointing_lowers_the_measured_peak_and_keeps_the_gradients():
    tokens = torch.randint(0, 256, (2, 129))
    plain, ckpt = lm(n_layers=4), lm(n_layers=4, activation_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    plain.train(), ckpt.train()
    a, b = peak_train_bytes(plain, tokens), peak_train_bytes(ckpt, tokens)
    assert b < 0.8 * a
    assert peak_train_bytes(plain, tokens) == a  # deterministic
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)


# ---- positions -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", POSITIONS)
def test_each_position_encoding_is_causal_and_decodes_like_the_forward(variant):
    torch.manual_seed(0)
    model = DecoderLM(position_config(variant, 60, 3, 2, max_positions=96)).double().eval()
    x = torch.randint(0, 256, (2, 63))
    y = model(x)
    x2 = x.clone()
    x2[:, 40:] = torch.randint(0, 256, (2, 23))
    torch.testing.assert_close(model(x2)[:, :40], y[:, :40])  # future tokens never change past logits
    assert (model(x2)[:, 40:] - y[:, 40:]).abs().max() > 1e-6
    state, steps = model.init_state(2), []
    for t in range(63):
        logits, state = model.step(x[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), y, rtol=1e-9, atol=1e-9)


def test_position_variants_differ_in_what_they_add():
    kinds = {v: (DecoderLM(position_config(v, 32, 2, 1, 64)).pos_emb, POSITION_VARIANTS[v][0]) for v in POSITIONS}
    assert kinds == {"sinusoidal": ("sinusoidal", "standard"), "learned": ("learned", "standard"),
                     "rope": ("none", "standard"), "alibi": ("none", "alibi")}
    assert DecoderLM(position_config("sinusoidal", 32, 2, 1, 64)).blocks[0].mixer.rope_theta is None
    assert DecoderLM(position_config("rope", 32, 2, 1, 64)).blocks[0].mixer.rope_theta == 10000.0
    with pytest.raises(ValueError, match="past the learned table"):
        DecoderLM(position_config("learned", 32, 2, 1, 16))(torch.zeros(1, 17, dtype=torch.long))


# ---- the suite end to end ------------------------------------------------------------------------------------------

TINY_TRAIN = "{seq_len: 16, batch: 2, steps: 2, warmup_steps: 1, eval_bytes: 256}"


def test_a_tiny_optimizations_suite_runs_and_reports_every_kind_and_claim(tmp_path):
    pytest.importorskip("optimum.quanto")
    from harness.suites import load_suite
    from harness.results import read_rows
    from harness.runner import run_suite

    text = f"""
suite: tiny_optim
mixers: [standard]
time_budget_s: 300
timing: {{warmup: 0, min_run_time_s: 0.001, min_repeats: 1, max_time_s: 0.5, cpu_threads: 1}}
benchmarks:
  - kind: kv_cache
    modes: [decode]
    sweep: {{seq_len: [1, 8], d_model: [32], n_heads: [2]}}
  - kind: quantization
    modes: [fp32, int4, kv_int8]
    sweep: {{seq_len: [16], d_model: [32], n_heads: [2]}}
    params: {{context: 8, kv_eval_bytes: 32, training: {TINY_TRAIN}}}
  - kind: speculative
    modes: [greedy]
    sweep: {{seq_len: [16], d_model: [32], n_heads: [2]}}
    params: {{target_layers: 1, draft_lengths: [2], prompt_len: 8, new_tokens: 6, training: {TINY_TRAIN},
              draft: {{d_model: 16, n_heads: 1, n_layers: 1}}}}
  - kind: checkpointing
    modes: [train]
    sweep: {{seq_len: [16], batch: [2], d_model: [32], n_heads: [2]}}
    params: {{n_layers: 2}}
  - kind: precision
    modes: [train]
    sweep: {{seq_len: [16], batch: [2], d_model: [32], n_heads: [2], dtype: [float32, bfloat16]}}
    params: {{training: {TINY_TRAIN}}}
  - kind: components
    modes: [norm, positions]
    sweep: {{seq_len: [16], batch: [2], d_model: [32]}}
    params: {{d_model: 32, n_heads: 2, position_variants: [rope, sinusoidal], eval_multiples: [1, 8],
              eval_windows: 2, training: {TINY_TRAIN}}}
  - kind: claims
    params: {{methods_table: false, only: ["kv_cache_*", "quant_int4_*", "spec_greedy_*", "ckpt_*",
                                            "precision_*", "rmsnorm_faster", "rope_extrapolates_vs_sinusoidal"]}}
"""
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    suite, _ = load_suite(path)
    out = tmp_path / "out"
    summary = run_suite(suite, out, torch.device("cpu"), suite_path=path, progress=False)
    assert set(summary.statuses) == {"ok"}, summary.statuses
    rows = read_rows(out / "results.jsonl")
    assert {r["metric"] for r in rows if r["benchmark"] == "speculative"} >= {"acceptance_rate", "matches_target"}
    assert all(r["value"] == 1.0 for r in rows if r["metric"] == "matches_target")
    report = (out / "report.md").read_text()
    for kind in ("kv_cache", "quantization", "speculative", "checkpointing", "precision", "components"):
        assert f"## Benchmark `{kind}` ({kind})" in report
    assert "## The guide's claims, measured" in report and "Master Comparison Table" not in report
    import pandas as pd

    claims = pd.read_csv(out / "claims.csv")
    assert set(claims["id"]) == {"kv_cache_faster", "quant_int4_4x", "quant_int4_quality", "spec_greedy_2_3x",
                                 "ckpt_saves_memory", "ckpt_costs_time", "precision_half_memory",
                                 "precision_fp16_speedup", "rmsnorm_faster", "rope_extrapolates_vs_sinusoidal"}
    verdicts = dict(zip(claims["id"], claims["verdict"]))
    assert verdicts["precision_fp16_speedup"] == "not measurable here"  # a GPU claim on a CPU run: said, not dropped
    assert verdicts["ckpt_saves_memory"] == "holds"  # exact bytes
    assert all(v in ("holds", "does not hold") for k, v in verdicts.items() if k != "precision_fp16_speedup")
    for plot in ("kv_cache-speedup", "speculative-acceptance", "components-positions", "checkpointing-ratios"):
        assert (out / "plots" / f"{plot}.png").exists(), plot


# ---- claims: the `figure` and `compare` checks ---------------------------------------------------------------------

class _Run:
    """The part of ``harness.report.run.RunData`` the claims read: the rows, and the rows and entries of a kind."""

    def __init__(self, df, kinds):
        self.df, self.kinds = df, kinds

    def rows_of_kind(self, kind):
        return self.df if kind in self.kinds else self.df.iloc[0:0]

    def entries(self, kind):
        return [kind] if kind in self.kinds else []


def _claims_run(device="cpu"):
    import pandas as pd

    base = {"benchmark": "q", "status": "ok", "device": device, "mode": "fp32"}
    rows = [{**base, "metric": "compression_vs_fp16", "value": v, "variant": var, "seq_len": 64}
            for var, v in (("int8", 1.97), ("int4", 3.5))]
    rows += [{**base, "metric": "speedup", "value": v, "seq_len": n} for n, v in ((16, 0.9), (2048, 40.0))]
    rows += [{**base, "metric": "bpb", "value": v, "variant": var, "seq_len": 64} for var, v in (("a", 3.0), ("b", 3.2))]
    return _Run(pd.DataFrame(rows), {"quantization"})


def _claim(**kw):
    from harness.claims import Claim

    return Claim(id="c", method="standard", text="t", benchmark="quantization", **kw)


def test_figure_claims_select_rows_and_hold_them_to_a_range():
    from harness.claims import ClaimsFile, check_claim

    cf = ClaimsFile(methods=[])
    run = _claims_run()
    v = lambda c: check_claim(run, c, cf)["verdict"]  # noqa: E731
    assert v(_claim(check="figure", metric="compression_vs_fp16", where={"variant": "int8"}, range=(2, 2),
                    relative_tolerance=0.1)) == "holds"
    assert v(_claim(check="figure", metric="compression_vs_fp16", where={"variant": "int4"}, range=(4, 4),
                    relative_tolerance=0.1)) == "does not hold"  # 3.5 < 3.6
    assert v(_claim(check="figure", metric="speedup", range=(2, None), relative_tolerance=0.0)) == "holds"  # longest
    assert v(_claim(check="figure", metric="speedup", select="min", range=(2, None),
                    relative_tolerance=0.0)) == "does not hold"
    row = check_claim(run, _claim(check="figure", metric="compression_vs_fp16", where={"variant": "int2"},
                                  range=(8, 8), relative_tolerance=0.1), cf)
    assert row["verdict"] == "not measurable here" and "variant=int2" in row["why"]
    assert v(_claim(check="compare", metric="bpb", where={"variant": "a"}, against_where={"variant": "b"},
                    margin=0.0)) == "holds"
    assert v(_claim(check="compare", metric="bpb", where={"variant": "b"}, against_where={"variant": "a"},
                    margin=0.0)) == "does not hold"
    gpu_only = _claim(check="figure", metric="compression_vs_fp16", where={"variant": "int8"}, range=(2, 2),
                      relative_tolerance=0.1, devices=["cuda"], device_reason="a GPU figure")
    row = check_claim(run, gpu_only, cf)
    assert row["verdict"] == "not measurable here" and "a GPU figure" in row["why"]
    assert check_claim(_claims_run("cuda:0"), gpu_only, cf)["verdict"] == "holds"
    with pytest.raises(ValueError, match="needs"):
        _claim(check="compare", metric="bpb", where={"variant": "a"}, margin=0.0)
