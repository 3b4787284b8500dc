"""Everything that differs between a GPU and a CPU lives here, both paths side by side.

- ``resolve_device``: "auto" | "cpu" | "cuda[:i]" -> torch.device, with a clear error when CUDA is asked for and absent.
- ``time_callable``: warm-up, then repeats until a minimum time; median and IQR. CUDA: CUDA events around each call
  and ``torch.cuda.synchronize``. CPU: ``time.perf_counter`` around each call (a block of calls when one is under
  1 ms), the garbage collector paused as in ``timeit``, at the process's thread count; every call but the warm-up
  is a timed one.
- ``allocator_peak``: the CUDA caching allocator's peak over a region (None on CPU, which has no such counter; the
  device-independent figure is ``harness.measure.LiveTensorBytes``).
- ``is_oom``: whether an exception is an out-of-memory on either device.
- ``device_info``: the device's name, for the environment record.
- ``matmul_peak_sizes``, ``matmul_peak_threads``: the square matmul sizes and CPU thread counts whose best FLOP/s
  is taken as the device's peak.
- ``cuda_status``: whether CUDA can run here and, if not, why (for ``scripts/gpu_check.sh``); the GPU's name.
- ``cpu_memory_cap``: an address-space limit below physical memory, so that a cell too large for the machine fails
  as a recorded ``oom`` instead of the kernel killing the run.
- ``configure_cpu_allocator``: makes glibc keep freed memory for reuse (the CPU counterpart of CUDA's caching
  allocator), so that timings measure compute rather than the kernel's page faults on every fresh allocation.
"""
from __future__ import annotations

import contextlib
import gc
import math
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; expected auto, cpu or cuda[:index]")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    median_s: float
    q1_s: float
    q3_s: float
    repeats: int  # number of timed measurements the statistics are over
    number_per_run: int  # calls averaged inside one measurement (>1 only for very short calls)
    threads: int
    timer: str  # what measured: "cuda_events" or "perf_counter"

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s


def _quartiles(times: list[float]) -> tuple[float, float, float]:
    if len(times) == 1:
        return times[0], times[0], times[0]
    q = statistics.quantiles(times, n=4, method="inclusive")
    return q[1], q[0], q[2]


def time_callable(fn: Callable[[], object], device: torch.device, *, warmup: int = 2, min_run_time: float = 0.3,
                  min_repeats: int = 5, max_time: float = 30.0) -> Timing:
    """Median time of one call of ``fn``. Stops once both min_run_time and min_repeats are reached, or at max_time.

    The last warm-up call is timed with the wall clock (after a synchronize) and serves the CPU timer as its probe
    of how long one call takes; without warm-up the CPU timer spends one call on that probe."""
    last_warmup: float | None = None
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        last_warmup = time.perf_counter() - t0
    synchronize(device)
    if device.type == "cuda":
        return _time_cuda(fn, device, min_run_time, min_repeats, max_time)
    return _time_cpu(fn, min_run_time, min_repeats, max_time, probe=last_warmup)


def _time_cuda(fn: Callable[[], object], device: torch.device, min_run_time: float, min_repeats: int,
               max_time: float) -> Timing:
    times: list[float] = []
    start_wall = time.perf_counter()
    while True:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1e3)
        elapsed = time.perf_counter() - start_wall
        if (elapsed >= min_run_time and len(times) >= min_repeats) or elapsed >= max_time:
            break
    median, q1, q3 = _quartiles(times)
    return Timing(median, q1, q3, len(times), 1, torch.get_num_threads(), "cuda_events")


def _wall_per_call(fn: Callable[[], object], number: int) -> float:
    """Wall-clock seconds per call over ``number`` back-to-back calls, the garbage collector paused as in timeit."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return max(time.perf_counter() - t0, 1e-9) / number
    finally:
        if gc_was_enabled:
            gc.enable()


def _time_cpu(fn: Callable[[], object], min_run_time: float, min_repeats: int, max_time: float,
              probe: float | None = None) -> Timing:
    # Our own loop rather than torch.utils.benchmark.Timer.timeit, which runs two untimed calls before every timed
    # one: a third of the calls measured, three times the cost of a cell for the same statistics.
    threads = torch.get_num_threads()
    # The probe (one call's time) sets the block size: very short calls are grouped so that one measurement lasts
    # >= ~1 ms. A timed warm-up call is the probe; without one, a call is spent on it here.
    if probe is None:
        probe = _wall_per_call(fn, 1)
    number = max(1, math.ceil(1e-3 / max(probe, 1e-9))) if probe < 1e-3 else 1
    times: list[float] = []
    start_wall = time.perf_counter()
    while True:
        times.append(_wall_per_call(fn, number))
        elapsed = time.perf_counter() - start_wall
        if (elapsed >= min_run_time and len(times) >= min_repeats) or elapsed >= max_time:
            break
    median, q1, q3 = _quartiles(times)
    return Timing(median, q1, q3, len(times), number, threads, "perf_counter")


@contextlib.contextmanager
def allocator_peak(device: torch.device) -> Iterator[dict]:
    """Yields a dict whose "peak_bytes" is set on exit: the CUDA allocator's peak above its level at entry."""
    result: dict = {"peak_bytes": None}
    if device.type != "cuda":
        yield result
        return
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    try:
        yield result
    finally:
        torch.cuda.synchronize(device)
        result["peak_bytes"] = torch.cuda.max_memory_allocated(device) - base


_CPU_ALLOCATOR = {"mode": "system"}


def configure_cpu_allocator(mode: str = "caching") -> str:
    """"caching": ask glibc (mallopt) to serve large blocks from the heap and never return freed memory to the OS.

    Without it, every tensor above 32 MB is a fresh mmap whose pages fault in on first touch; in a virtual machine
    that costs more than the arithmetic (measured here: 1.3-7 ns per float against 0.16 ns for the op itself) and
    varies from call to call. CUDA has a caching allocator; this gives the CPU the same steady state. Returns a
    description for env.json ("system" if not applied: another libc, or mode "system").
    """
    if mode == "system":
        return "system (glibc defaults: large blocks are mmapped and returned on free)"
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 0x7FFFFFFF) == 1
    except (OSError, AttributeError):
        ok = False
    _CPU_ALLOCATOR["mode"] = "caching" if ok else "system"
    if not ok:
        return "system (mallopt unavailable: not glibc)"
    return "caching (glibc mallopt: M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1; freed memory is reused)"


@contextlib.contextmanager
def cpu_memory_cap(fraction: float | None) -> Iterator[str]:
    """Cap the process's address space (RLIMIT_AS) at ``fraction`` of physical memory for the duration of a run.

    Past the cap an allocation fails inside PyTorch ("DefaultCPUAllocator: can't allocate memory"), which the runner
    records as an ``oom`` cell before going on; without it, a cell that needs more than the machine has (exact
    attention's n x n scores at long n) is killed by the kernel's OOM killer with the whole run. Yields a
    description for env.json; the previous limit is restored on exit. ``None`` or 0: no cap.
    """
    try:
        import os
        import resource
    except ImportError:  # not a POSIX system
        yield "none (no resource module)"
        return
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    if not fraction or not physical:
        yield "none"
        return
    previous = resource.getrlimit(resource.RLIMIT_AS)
    hard = previous[1]
    cap = int(physical * fraction)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield (f"RLIMIT_AS {cap / 2**30:.1f} GiB ({fraction:.0%} of {physical / 2**30:.1f} GiB physical): "
               "a larger allocation is an `oom` cell")
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):  # CUDA (and any backend raising the typed error)
        return True
    message = str(err)
    return isinstance(err, (RuntimeError, MemoryError)) and (
        isinstance(err, MemoryError)
        or "out of memory" in message.lower()
        or "DefaultCPUAllocator: can't allocate memory" in message
    )


def matmul_peak_sizes(device: torch.device) -> tuple[int, ...]:
    """Sizes over which ``harness.measure.measure_matmul_peak`` takes the best: a CPU core peaks on cache-sized
    blocks (256-512 here; 1024 already streams from L3), a GPU only on large ones (it needs thousands of tiles)."""
    if device.type == "cuda":
        return (2048, 4096, 8192)
    return (256, 512, 1024)


@contextlib.contextmanager
def matmul_peak_threads(device: torch.device) -> Iterator[list[int | None]]:
    """Thread counts to measure the matmul peak at (None: as it is), restored on exit. CPU: one thread and the
    process's count. All cores' peak is at least one core's, and one core's best is what a machine shared with other
    processes still shows (a time slice of one core is easy to get, of every core at once is not: on our loaded
    2-core VM the two-thread best read 13 GFLOP/s against one thread's 100), so the larger of the two is a lower
    bound of the peak that contention cannot push below what a cell reaches."""
    if device.type != "cpu":
        yield [None]
        return
    threads = torch.get_num_threads()
    try:
        yield sorted({1, threads})
    finally:
        torch.set_num_threads(threads)


def cuda_status() -> dict:
    """{"available", "reason" (None when available), "torch", "cuda_build", "gpu", "capability", "memory_bytes",
    "gpu_count"}: what a GPU check reports about the machine before it runs anything."""
    status = {"available": False, "reason": None, "torch": torch.__version__, "cuda_build": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
              "gpu": None, "capability": None, "memory_bytes": None, "gpu_count": 0}
    if torch.version.cuda is None:
        status["reason"] = f"torch {torch.__version__} is a build without CUDA"
    elif not torch.cuda.is_available():
        status["reason"] = f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU"
    else:
        props = torch.cuda.get_device_properties(0)
        status.update(available=True, gpu=props.name, capability=f"{props.major}.{props.minor}",
                      memory_bytes=props.total_memory, gpu_count=torch.cuda.device_count())
    return status


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "device_type": device.type}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, device_memory_bytes=props.total_memory,
                    cuda_version=torch.version.cuda, capability=f"{props.major}.{props.minor}")
    else:
        info.update(device_name=cpu_model(), cpu_capability=torch.backends.cpu.get_cpu_capability())
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- reduced-precision training (the `precision` benchmark) --------------------------------------------------------

def precision_recipe(dtype: torch.dtype, device: torch.device) -> str:
    """How a model trains in ``dtype`` here. CUDA: fp32 master weights + ``torch.autocast`` (mixed precision, the
    usual GPU recipe); CPU: the weights themselves cast to ``dtype`` (CPU autocast keeps fp32 weights and casts on
    every op, which saves no weight memory and is slower than fp32 on most CPUs)."""
    if dtype == torch.float32:
        return "fp32"
    return "autocast" if device.type == "cuda" else "weights"


def in_precision(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """The module to train and run in ``dtype`` on ``device`` (see ``precision_recipe``); logits come back fp32."""
    recipe = precision_recipe(dtype, device)
    if recipe == "fp32":
        return model
    if recipe == "autocast":
        from .lm import Autocast

        return Autocast(model, dtype)
    return model.to(dtype)
