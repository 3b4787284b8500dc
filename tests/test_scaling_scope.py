"""The scaling benchmark's operator scope: the core operator alone, without the layer's projections.

FLOP counts are deterministic, so the exponents below are exact properties of the code, not timings."""
import math

from harness.config import Suite
from harness.device import resolve_device
from harness.results import read_rows
from harness.runner import run_suite

CPU = resolve_device("cpu")


def _suite(scope: str, mixers, modes=("forward",), seq_lens=(256, 1024)) -> Suite:
    return Suite.model_validate({
        "suite": "scope", "mixers": list(mixers),
        "timing": {"warmup": 0, "min_run_time_s": 0.001, "min_repeats": 1, "max_time_s": 0.2},
        "benchmarks": [{"kind": "scaling", "modes": list(modes),
                        "sweep": {"seq_len": list(seq_lens), "d_model": [128], "n_heads": [4]},
                        "params": {"scope": scope, "metrics": ["flops", "memory"], "crossover_against": []}}]})


def _flops_exponent(rows, mixer: str, mode: str = "forward") -> float:
    f = {r["seq_len"]: r["value"] for r in rows
         if r["mixer"] == mixer and r["mode"] == mode and r["metric"] == "flops" and r["status"] == "ok"}
    (n0, f0), (n1, f1) = sorted(f.items())
    return math.log(f1 / f0) / math.log(n1 / n0)


def test_operator_scope_shows_the_pattern_that_projections_hide(tmp_path):
    mixers = ["sparse_transformer", "clustering", "sliding_window", "gla"]
    run_suite(_suite("operator", mixers, modes=("forward", "train")), tmp_path / "op", CPU, progress=False,
              write_report=False)
    run_suite(_suite("layer", mixers), tmp_path / "layer", CPU, progress=False, write_report=False)
    op, layer = read_rows(tmp_path / "op" / "results.jsonl"), read_rows(tmp_path / "layer" / "results.jsonl")
    for mixer in ("sparse_transformer", "clustering"):  # O(n^1.5): the operator shows it, the layer hides it
        assert 1.4 <= _flops_exponent(op, mixer) <= 1.65, mixer
        assert _flops_exponent(layer, mixer) < _flops_exponent(op, mixer) - 0.15, mixer
        assert 1.4 <= _flops_exponent(op, mixer, "train") <= 1.65, mixer
    assert abs(_flops_exponent(op, "gla") - 1.0) < 0.02  # chunkwise: linear at any length
    assert {r["op_impl"] for r in op if r["status"] == "ok"} == {"blocked", "chunk"}
    assert not any("params" == r["metric"] for r in op)


def test_operator_scope_skips_what_it_cannot_measure(tmp_path):
    s = Suite.model_validate({
        "suite": "scope", "timing": {"warmup": 0, "min_run_time_s": 0.001, "min_repeats": 1},
        "mixers": ["standard", "gla", {"name": "gla", "label": "gla_fla", "impl": "fla"},
                   {"name": "gla", "label": "gla_c16", "hparams": {"chunk_size": 16}}],
        "benchmarks": [{"kind": "scaling", "modes": ["forward", "decode"],
                        "sweep": {"seq_len": [64], "d_model": [32], "n_heads": [2]},
                        "params": {"scope": "operator", "metrics": ["flops"], "crossover_against": []}}]})
    run_suite(s, tmp_path, CPU, progress=False, write_report=False)
    status = {(r["mixer"], r["mode"]): (r["status"], r.get("error") or "") for r in read_rows(tmp_path / "results.jsonl")}
    assert status[("gla", "forward")][0] == "ok"
    assert status[("standard", "forward")][0] == "skipped" and "no operator" in status[("standard", "forward")][1]
    assert status[("gla", "decode")][0] == "skipped" and "no decode" in status[("gla", "decode")][1]
    assert status[("gla_fla", "forward")][0] == "skipped" and "layer scope" in status[("gla_fla", "forward")][1]
    assert status[("gla_c16", "forward")][0] == "skipped" and "chunk_size" in status[("gla_c16", "forward")][1]
