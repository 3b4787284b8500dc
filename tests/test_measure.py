import math
import time

import pytest
import torch
import torch.nn.functional as F

from harness.device import is_oom, time_callable
from harness.measure import LiveTensorBytes, count_flops_mode, instrumented


def test_live_tensor_bytes_is_exact():
    x = torch.randn(1000, 1000)  # made before the region: not counted
    with LiveTensorBytes() as live:
        a = x * 2  # 4 MB live
        b = a + 1  # 8 MB live
        del a  # 4 MB live
        c = b.sum(0)  # + 4 kB
    assert live.peak == 8_000_000
    assert live.live == 4_000_000 + 4_000
    del b, c


def test_views_share_their_storage():
    with LiveTensorBytes() as live:
        a = torch.zeros(100, 100)
        v = a[:10]
        w = a.t()
    assert live.peak == 40_000
    del a, v, w


def test_cpu_sdpa_flops_are_counted_like_explicit_attention():
    B, H, T, D = 1, 2, 64, 16
    q, k, v = (torch.randn(B, H, T, D, requires_grad=True) for _ in range(3))
    mm = 2 * B * H * T * T * D  # one (T x D) @ (D x T) product
    with count_flops_mode() as fused:
        out = F.scaled_dot_product_attention(q, k, v)
    with count_flops_mode() as fused_bwd:
        out.sum().backward()
    with count_flops_mode() as explicit:
        out = (q @ k.transpose(-1, -2) / math.sqrt(D)).softmax(-1) @ v
    with count_flops_mode() as explicit_bwd:
        out.sum().backward()
    assert fused.get_total_flops() > 0, "PyTorch alone counts the CPU SDPA op as 0"
    assert fused.get_total_flops() == explicit.get_total_flops() == 2 * mm
    # the fused backward recomputes Q K^T (flash does not store the scores): one product more than autograd
    assert explicit_bwd.get_total_flops() == 4 * mm
    assert fused_bwd.get_total_flops() == 5 * mm


def test_instrumented_records_sdpa_backend():
    q = torch.randn(1, 2, 32, 16)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        got = instrumented(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True))
    assert got.sdpa_backend == "FLASH_ATTENTION (cpu)"
    assert got.flops == got.flops_executed == 2 * 2 * 2 * (32 * 33 // 2) * 16  # the causal pairs, n(n+1)/2
    assert got.peak_tensor_bytes >= 2 * 32 * 16 * 4
    with sdpa_kernel([SDPBackend.MATH]):
        got = instrumented(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True))
    assert got.sdpa_backend is None


def test_time_callable_statistics():
    x = torch.randn(256, 256)
    t = time_callable(lambda: x @ x, torch.device("cpu"), warmup=1, min_run_time=0.05, min_repeats=5)
    assert t.repeats >= 5 and t.median_s > 0 and t.q1_s <= t.median_s <= t.q3_s
    assert t.threads == torch.get_num_threads() and t.timer == "perf_counter"


@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_time_callable_spends_calls_on_timing(warmup):
    """Every call is a warm-up, the probe (only without warm-up) or a timed one: no hidden untimed calls (as
    torch.utils.benchmark.Timer.timeit makes, two per measurement)."""
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002)  # > 1 ms: one call per measurement

    t = time_callable(fn, torch.device("cpu"), warmup=warmup, min_run_time=0.0, min_repeats=5, max_time=10.0)
    assert t.number_per_run == 1 and t.repeats == 5
    assert len(calls) == warmup + (1 if warmup == 0 else 0) + t.repeats
    assert 0.002 <= t.q1_s <= t.median_s <= t.q3_s


def test_time_callable_groups_short_calls():
    """Calls under 1 ms are timed in blocks of ``number_per_run`` calls; the median is per call."""
    t = time_callable(lambda: None, torch.device("cpu"), warmup=1, min_run_time=0.0, min_repeats=3)
    assert t.number_per_run > 1 and t.median_s < 1e-3


def test_oom_classification():
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert is_oom(MemoryError())
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))
