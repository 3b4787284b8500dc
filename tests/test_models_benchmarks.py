"""The model benchmark kinds (model_figures, model_speed, attention_memory) run end to end in a small suite; their
report sections and the guide's model-level claims are rendered from the run directory."""
from __future__ import annotations

import textwrap

import pandas as pd
import pytest
import torch

import architectures.models as M

from harness.config import SuiteError
from harness.suites import load_suite
from harness.results import load_results
from harness.runner import run_suite

SUITE = """
suite: models_small
mixers: [standard]
timing: {warmup: 0, min_run_time_s: 0.01, min_repeats: 1, max_time_s: 1}
benchmarks:
  - kind: model_figures
    modes: [analytic]
    params:
      models: [llama2-7b, bert-base]
      context: 256
      variants:
        llama2-7b-gqa8: {model: llama2-7b, config: {mixer_hparams: {gqa: {n_kv_heads: 8}}}}
  - kind: model_speed
    modes: [prefill, decode, perplexity]
    sweep: {seq_len: [16, 32], batch: [1]}
    params: {models: [llama2-7b, bert-base, t5-base], steps: 2, train_seq_len: 32, train_batch: 2, eval_bytes: 256}
  - kind: attention_memory
    sweep: {seq_len: [512, 32768], batch: [1], d_model: [512], n_heads: [8], dtype: [float32]}
    params: {real_up_to: 512}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    path = tmp / "suite.yaml"
    path.write_text(SUITE)
    suite, _ = load_suite(path)
    run_suite(suite, tmp / "out", torch.device("cpu"), suite_path=path, progress=False, cpu_memory_fraction=None)
    return tmp / "out"


def _value(df, label, metric, **where):
    r = df[(df["mixer"] == label) & (df["metric"] == metric)]
    for k, v in where.items():
        r = r[r[k] == v]
    assert len(r) == 1, (label, metric, where, len(r))
    return float(r["value"].iloc[0])


def test_figures_rows(run_dir):
    df = load_results(run_dir)
    fig = df[df["benchmark"] == "model_figures"]
    assert (fig["status"] == "ok").all(), fig[fig["status"] != "ok"][["mixer", "error"]]
    assert _value(fig, "llama2-7b", "params") == 6738415616
    per_token = _value(fig, "llama2-7b", "state_bytes_per_token", cache_dtype="bf16")
    assert per_token == 2 * 32 * 4096 * 2  # K and V, 32 layers, 32 heads of 128, 2 bytes
    assert _value(fig, "llama2-7b-gqa8", "state_bytes_per_token", cache_dtype="bf16") == per_token / 4
    assert _value(fig, "llama2-7b", "state_bytes", context=1048576, cache_dtype="int4") == per_token * 1048576 / 4
    assert _value(fig, "llama2-7b", "measured_state_bytes", context=256) == 256 * per_token * 2  # fp32 meta state
    assert _value(fig, "bert-base", "flops_context") == 256


def test_speed_rows(run_dir):
    df = load_results(run_dir)
    sp = df[df["benchmark"] == "model_speed"]
    ok = sp[sp["status"] == "ok"]
    assert _value(ok, "llama2-7b", "tokens_per_s", mode="decode", seq_len=32) > 0
    assert _value(ok, "llama2-7b", "state_bytes", mode="decode", seq_len=32) == \
        _value(ok, "llama2-7b", "state_bytes_formula", mode="decode", seq_len=32)
    assert _value(ok, "llama2-7b", "val_bpb", mode="perplexity") > 0
    skipped = sp[(sp["mixer"] == "bert-base") & (sp["mode"] == "decode")]
    assert (skipped["status"] == "skipped").all()
    # an encoder-decoder decodes one target token after a source and a target of seq_len tokens
    cfg = M.get_model("t5-base").tiny
    kv_per_token = 2 * cfg.n_heads * (cfg.d_head or cfg.d_model // cfg.n_heads) * 4  # K and V, fp32
    assert _value(ok, "t5-base", "state_bytes", mode="decode", seq_len=32) == \
        _value(ok, "t5-base", "state_bytes_formula", mode="decode", seq_len=32) == \
        cfg.n_decoder_layers * (32 + 32) * kv_per_token


def test_attention_memory_rows(run_dir):
    df = load_results(run_dir)
    am = df[(df["benchmark"] == "attention_memory") & (df["status"] == "ok")]
    assert _value(am, "standard", "largest_tensor_values_per_head", seq_len=32768) == 32768**2
    assert _value(am, "standard", "largest_tensor_bytes", seq_len=512) == 8 * 512**2 * 4
    assert _value(am, "standard", "peak_tensor_bytes", seq_len=512) >= 8 * 512**2 * 4


def test_report_sections_and_claims(run_dir):
    text = (run_dir / "report.md").read_text()
    for heading in ("(model_figures)", "(model_speed)", "(attention_memory)", "model-level claims"):
        assert heading in text
    claims = pd.read_csv(run_dir / "model_claims.csv").set_index("id")
    assert claims.loc["bert_base_110m", "verdict"] == "holds"
    assert claims.loc["kv_7b_4k_llama2_bf16", "verdict"] == "does not hold"  # 2.1 GB
    assert claims.loc["kv_7b_4k_llama2_int8", "verdict"] == "holds"  # 1.07 GB
    assert claims.loc["attention_32k_1b_values", "verdict"] == "holds"  # 1.07e9
    assert claims.loc["attention_memory_512", "verdict"] == "does not hold"  # 8.4 MB, not 512 MB
    assert claims.loc["mixtral_total_params", "verdict"] == "not measurable here"  # not in this run


def test_bad_model_names_are_suite_errors(tmp_path):
    bad = SUITE.replace("models: [llama2-7b, bert-base]\n      context", "models: [llama-2*]\n      context")
    bad = bad.replace("config: {mixer_hparams", "config: {n_kv_heads: 8, mixer_hparams")
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(bad))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    text = str(err.value)
    assert f"{path}:9: benchmarks[0].params.models" in text and "'llama-2*' matches no model" in text
    assert "benchmarks[0].params.variants.llama2-7b-gqa8" in text and "no field(s) ['n_kv_heads']" in text
