"""lm-eval on harness checkpoints: the registered byte-level model, the local task, and agreement with val_bpb."""
import json
import math
import random
import socket

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from architectures.backbone import DecoderLM, LMConfig  # noqa: E402
from harness.benchmarks import BENCHMARKS, RunContext  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.config import Suite, resolve_mixers  # noqa: E402
from harness.device import resolve_device  # noqa: E402
from harness.lm import PREFIX_BYTE, causal_bits_per_byte, save_checkpoint  # noqa: E402
from harness.lm_eval_adapter import LOCAL_TASK, MODEL_NAME, HarnessLM, write_local_task  # noqa: E402

CPU = resolve_device("cpu")
L = 32  # the checkpoint's training context


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small causal checkpoint written by the perplexity benchmark (tiny model, 80 steps, 3 KB of validation).

    The text is random words from a small list, so that a model learns within-word structure in a few steps and its
    predictions depend on the context it gets (a few steps on prose only learn byte frequencies, for which any
    windowing gives the same figure)."""
    rng = random.Random(0)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    corpus = tmp_path_factory.mktemp("corpus") / "words.txt"
    corpus.write_text(" ".join(rng.choice(words) for _ in range(6000)))
    suite = Suite.model_validate({
        "suite": "t", "mixers": ["standard"], "benchmarks": [{
            "kind": "perplexity", "modes": ["causal_lm"],
            "sweep": {"seq_len": [L], "batch": [8], "d_model": [32], "n_heads": [2]},
            "params": {"corpus": {"kind": "file", "path": str(corpus)}, "steps": 80, "lrs": [1e-2],
                       "warmup_steps": 4, "eval_every": 0, "eval_bytes": 3000}}]})
    bench = BENCHMARKS.get("perplexity")(suite.benchmarks[0], suite, CPU)
    cell = next(iter(bench.cells(resolve_mixers(suite))))
    out = tmp_path_factory.mktemp("run")
    rows = bench.run_cell(cell, RunContext(CPU, None, {}, out=out))
    best = next(r for r in rows if r["metric"] == "val_bpb" and r["best"])
    return out / best["checkpoint"], best["value"]


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def request(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=tuple(args), idx=0)


def test_the_model_is_registered_with_lm_eval():
    from lm_eval.api.registry import get_model

    assert get_model(MODEL_NAME) is HarnessLM


def test_lm_eval_bits_per_byte_agrees_with_the_harness(checkpoint, tmp_path, no_network, capsys):
    """Acceptance 2: lm-eval's bits_per_byte on the local task = the harness's val_bpb on the same bytes (< 1%)."""
    path, val_bpb = checkpoint
    meta = torch.load(path, weights_only=True)
    assert len(meta["val_text"].encode()) > 10 * L, "many windows: the rolling context handling is exercised"
    out = tmp_path / "lm_eval.json"
    assert main(["lm-eval", str(path), "--tasks", LOCAL_TASK, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bits_per_byte" in printed and "the harness's own val_bpb" in printed
    result = json.loads(out.read_text())["results"][LOCAL_TASK]
    lm_eval_bpb = result["bits_per_byte,none"]
    assert abs(lm_eval_bpb - val_bpb) / val_bpb < 0.01
    assert result["byte_perplexity,none"] == pytest.approx(2 ** lm_eval_bpb, rel=1e-9)
    assert val_bpb < 3.0, "a trained model (uniform: 8 bits; word frequencies alone: ~3.5)"

    # The agreement is not automatic: the same model with less context per byte scores measurably differently.
    shorter = causal_bits_per_byte(HarnessLM(str(path)).model, meta["val_text"].encode(), L // 8)["val_bpb"]
    assert abs(shorter - val_bpb) / val_bpb > 0.03


def test_local_task_file_holds_the_exact_text(tmp_path):
    text = "line one\nline two, ünïcode ✓\n\n"
    yaml_path = write_local_task(text, tmp_path)
    data = tmp_path / f"{LOCAL_TASK}.jsonl"
    assert json.loads(data.read_text(encoding="utf-8"))["text"] == text
    import yaml

    cfg = yaml.safe_load(yaml_path.read_text())
    assert cfg["dataset_path"] == "json" and cfg["output_type"] == "loglikelihood_rolling"
    assert cfg["dataset_kwargs"]["data_files"]["validation"] == str(data)
    assert [m["metric"] for m in cfg["metric_list"]] == ["word_perplexity", "byte_perplexity", "bits_per_byte"]


def test_loglikelihood_is_the_models_byte_log_probability(checkpoint):
    lm = HarnessLM(str(checkpoint[0]))
    context, continuation = "alpha bravo ", "charlie"
    (logprob, greedy), = lm.loglikelihood([request("loglikelihood", context, continuation)])
    tokens = torch.tensor(list((context + continuation).encode()))
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(tokens[None, :-1])[0], -1)  # (T-1, 256)
    k = len(context)
    expected = lp[k - 1:].gather(-1, tokens[k:, None]).sum().item()
    assert logprob == pytest.approx(expected, rel=1e-5)
    assert greedy == bool((lp[k - 1:].argmax(-1) == tokens[k:]).all())
    (empty_ctx, _), = lm.loglikelihood([request("loglikelihood", "", "a")])
    with torch.no_grad():
        first = torch.log_softmax(lm.model(torch.tensor([[PREFIX_BYTE]]))[0, 0], -1)[ord("a")].item()
    assert empty_ctx == pytest.approx(first, rel=1e-5), "an empty context is the prefix byte"


def test_long_texts_roll_over_the_context_length(checkpoint):
    lm = HarnessLM(str(checkpoint[0]), batch_size=3)
    text = "golf hotel alpha echo delta bravo charlie foxtrot " * 3  # > 4 contexts
    assert len(text.encode()) > 4 * L
    rolling, = lm.loglikelihood_rolling([request("loglikelihood_rolling", text)])
    (as_continuation, _), = lm.loglikelihood([request("loglikelihood", "", text)])
    harness = causal_bits_per_byte(lm.model, text.encode(), L)
    assert rolling == pytest.approx(as_continuation, rel=1e-6)
    assert -rolling / len(text.encode()) / math.log(2) == pytest.approx(harness["val_bpb"], rel=1e-6)


def test_generate_until_is_greedy_and_stops(checkpoint):
    lm = HarnessLM(str(checkpoint[0]))
    assert lm.can_step, "standard decodes with its KV cache"
    args = ("alpha ", {"until": [], "max_gen_toks": 24})
    with_step, = lm.generate_until([request("generate_until", *args)])
    lm.can_step = False  # recompute the forward over the window for every byte instead
    without_step, = lm.generate_until([request("generate_until", *args)])
    assert with_step == without_step and len(with_step.encode("utf-8", errors="replace")) >= 20
    stop = with_step[6:8]
    cut, = lm.generate_until([request("generate_until", "alpha ", {"until": [stop], "max_gen_toks": 24})])
    assert cut == with_step.split(stop)[0]
    with pytest.raises(ValueError, match="greedily"):
        lm.generate_until([request("generate_until", "x", {"do_sample": True, "temperature": 0.7})])


def test_masked_lm_checkpoints_are_refused(tmp_path):
    enc = DecoderLM(LMConfig(d_model=16, n_heads=2, n_layers=1, vocab_size=257, causal=False))
    path = save_checkpoint(tmp_path / "mlm.pt", enc, objective="masked_lm", seq_len=16, val_text="x")
    with pytest.raises(ValueError, match="masked_lm encoder"):
        HarnessLM(str(path))
