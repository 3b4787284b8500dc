"""The FLOP convention of harness.measure (FLOP_CONVENTION): algorithmic ``flops`` over the (query, key) pairs a mask
keeps, ``flops_executed`` beside them, ``peak_fraction`` bounded by the peak."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import architectures
from architectures import flop_notes
from architectures.ops.softmax_attention import softmax_attention
from harness.measure import FLOP_CONVENTION, LiveTensorBytes, MaskedWork, causal_pairs, instrumented


def _sdpa(causal: bool, T: int = 48, backward: bool = False, **kw):
    B, H, D = 1, 2, 16
    q, k, v = (torch.randn(B, H, T, D, requires_grad=backward) for _ in range(3))

    def fn():
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, **kw)
        if backward:
            out.sum().backward()
        return out
    return instrumented(fn)


def test_causal_pairs():
    assert causal_pairs(4, 4) == 10  # n(n+1)/2
    assert causal_pairs(1, 7) == 1  # top-left aligned: query 0 sees key 0
    assert causal_pairs(6, 3) == 1 + 2 + 3 + 3 * 3
    assert causal_pairs(3, 6) == 1 + 2 + 3


@pytest.mark.parametrize("backward", [False, True])
def test_fused_causal_sdpa_counts_the_kept_pairs(backward):
    """FlashAttention's convention: causal attention costs the kept half (here exactly n(n+1)/2 of n^2 pairs), in
    both figures: the kernel skips the blocks above the diagonal."""
    T = 48
    full, causal = _sdpa(False, T, backward), _sdpa(True, T, backward)
    assert causal.sdpa_backend == "FLASH_ATTENTION (cpu)"
    assert full.flops == full.flops_executed > 0
    assert causal.flops == causal.flops_executed == full.flops * (T * (T + 1) // 2) // (T * T)
    assert causal.flops < 0.53 * full.flops


def test_standard_executes_the_full_matrix_and_is_credited_the_causal_half():
    """standard computes every score then masks: executed = the full (bidirectional) count, algorithmic = flash's."""
    torch.manual_seed(0)
    x = torch.randn(2, 40, 64)

    def count(name, causal):
        m = architectures.create_mixer(name, 64, 2, causal=causal)
        with torch.no_grad():
            return instrumented(lambda: m(x))
    causal_std, bidir_std, causal_flash = count("standard", True), count("standard", False), count("flash", True)
    assert bidir_std.flops == bidir_std.flops_executed
    assert causal_std.flops_executed == bidir_std.flops_executed
    assert causal_std.flops == causal_flash.flops == causal_flash.flops_executed
    assert causal_std.flops < causal_std.flops_executed


def test_standard_train_masked_work_backward():
    """In training the masked entries cost again in both backward products: standard's algorithmic train count is
    flash's less the one Q K^T product flash recomputes in its backward."""
    torch.manual_seed(0)
    B, T, D, H = 1, 32, 64, 2

    def count(name):
        m = architectures.create_mixer(name, D, H, causal=True)
        x = torch.randn(B, T, D, requires_grad=True)
        return instrumented(lambda: m(x).sum().backward())
    std, flash = count("standard"), count("flash")
    recompute = 2 * B * H * causal_pairs(T, T) * (D // H)
    assert std.flops == flash.flops - recompute
    assert std.flops_executed > std.flops


@pytest.mark.parametrize("name", ["gqa", "mla", "sliding_window", "longformer", "transformer_xl", "alibi"])
def test_masking_mixers_report_their_masked_work(name):
    m = architectures.create_mixer(name, 64, 2, causal=True)
    x = torch.randn(1, 64, 64)
    with torch.no_grad():
        got = instrumented(lambda: m(x))
    assert 0 < got.flops < got.flops_executed


def test_sdpa_with_an_explicit_mask_executes_everything():
    T = 32
    keep = torch.ones(T, T, dtype=torch.bool).tril()
    try:
        masked = _sdpa(False, T, attn_mask=keep)
    except RuntimeError as err:  # pragma: no cover - a torch whose CPU flash kernel takes no mask
        pytest.skip(f"CPU flash SDPA with attn_mask: {err}")
    full = _sdpa(False, T)
    if masked.sdpa_backend != "FLASH_ATTENTION (cpu)":
        pytest.skip(f"masked SDPA ran {masked.sdpa_backend}")
    assert masked.flops_executed == full.flops_executed
    assert masked.flops == pytest.approx(full.flops * keep.float().mean().item(), rel=1e-6)


def test_notes_cost_nothing_and_leave_the_measurement_alone():
    q, k, v = (torch.randn(1, 64, 2, 16) for _ in range(3))
    flop_notes.masked_scores(torch.zeros(3, 3), kept=torch.ones(3, 3, dtype=torch.bool), d_qk=1, d_v=1)  # no one hears
    with pytest.raises(ValueError):
        flop_notes.masked_scores(torch.zeros(3, 3), d_qk=1, d_v=1)
    with LiveTensorBytes() as alone:
        softmax_attention(q, k, v, causal=True)
    with MaskedWork() as masked, LiveTensorBytes() as heard:
        softmax_attention(q, k, v, causal=True)
    assert heard.peak == alone.peak  # counting the mask allocated nothing inside the region
    assert masked.flops == 2 * 2 * (64 * 64 - causal_pairs(64, 64)) * (16 + 16)
    assert not flop_notes.LISTENERS


def test_the_convention_is_stated():
    for term in ("flops_executed", "peak_fraction", "n(n+1)/2", "FlashAttention"):
        assert term in FLOP_CONVENTION


@pytest.mark.slow
def test_smoke_suite_never_exceeds_the_peak(tmp_path):
    """Every row of the smoke suite, run in-process on the CPU: peak_fraction <= 1.05 (the 5%: timing noise)."""
    import pandas as pd

    from harness.suites import load_suite
    from harness.runner import run_suite

    suite, _ = load_suite("suites/smoke.yaml")
    run_suite(suite, tmp_path, torch.device("cpu"), suite_path=None, progress=False, write_report=False, threads=1)
    df = pd.read_json(tmp_path / "results.jsonl", lines=True)
    assert (df["status"] != "error").all(), df[df["status"] == "error"][["mixer", "mode", "error"]].to_string()
    fractions = df[df["metric"] == "peak_fraction"]
    assert len(fractions) > 50
    worst = fractions.sort_values("value").iloc[-1]
    assert worst["value"] <= 1.05, (f"{worst['benchmark']} {worst['mixer']} {worst['mode']} n={worst['seq_len']}: "
                                    f"{worst['value']:.2f} of the matmul peak")
    assert not math.isnan(worst["value"])


def test_matmul_peak_is_the_best_over_sizes_and_threads():
    from harness.measure import _best_matmul, measure_matmul_peak

    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    peak = measure_matmul_peak(cpu, torch.float32, sizes=(64, 128), seconds=0.02)
    assert torch.get_num_threads() == threads  # restored
    assert peak > 0 and peak >= 0.2 * _best_matmul(cpu, torch.float32, 128, 0.02)  # same order as any one size
