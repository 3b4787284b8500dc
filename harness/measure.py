"""Deterministic measurements, the same on every device: live tensor bytes, FLOPs, which SDPA kernel ran.

``instrumented(fn)`` runs ``fn`` once under three dispatch-level observers and returns what they saw:
- ``LiveTensorBytes``: the peak of the bytes held by tensor storages created inside the region (a
  ``TorchDispatchMode`` that sees every op's outputs and a weakref finaliser on each new storage). Parameters and
  inputs made before the region are not counted, so the figure is the activation / workspace peak. It is exact and
  repeatable, which is why CI gates on it; on CUDA the allocator peak is recorded beside it.
- ``FlopCounterMode`` with formulas added for the CPU SDPA kernels, which PyTorch 2.13 counts as 0 FLOPs.
- the aten SDPA ops that ran, mapped to a backend name (``sdpa_backend`` in the result rows).
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                            **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# The CPU flash kernel takes the same (B, H, T, D) shapes as the CUDA one, but FlopCounterMode only knows the CUDA op
# names and counts the CPU ops as 0. Same formulas as PyTorch's (no discount for causal masking, as for the others).
CPU_SDPA_FLOP_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}

SDPA_OPS = {
    "_scaled_dot_product_flash_attention_for_cpu": "FLASH_ATTENTION (cpu)",
    "_scaled_dot_product_flash_attention": "FLASH_ATTENTION",
    "_scaled_dot_product_efficient_attention": "EFFICIENT_ATTENTION",
    "_scaled_dot_product_cudnn_attention": "CUDNN_ATTENTION",
    "_scaled_dot_product_fused_attention_overrideable": "OVERRIDEABLE",
}


class LiveTensorBytes(TorchDispatchMode):
    """Tracks bytes of storages created inside the region; ``peak`` is their high-water mark."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[tuple[str, int], int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        nbytes = storage.nbytes()
        key = (storage.device.type, storage.data_ptr())
        if nbytes == 0 or key in self._sizes:
            return
        self._sizes[key] = nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: tuple[str, int]) -> None:
        self.live -= self._sizes.pop(key, 0)


class SdpaRecorder(TorchDispatchMode):
    """Records the names of the fused SDPA aten ops that ran (the math path shows as no fused op)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SDPA_OPS and name not in self.ops:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))

    def backend(self) -> str | None:
        return " + ".join(SDPA_OPS[o] for o in self.ops) or None


@dataclass
class Instrumented:
    peak_tensor_bytes: int
    flops: int
    sdpa_backend: str | None
    flops_by_op: dict[str, int] = field(default_factory=dict)
    result: Any = None


def count_flops_mode() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOP_FORMULAS)


def instrumented(fn: Callable[[], Any]) -> Instrumented:
    """Run ``fn`` once under the three observers."""
    flops, live, sdpa = count_flops_mode(), LiveTensorBytes(), SdpaRecorder()
    with flops, live, sdpa:
        result = fn()
    by_op = {str(k): int(v) for k, v in flops.get_flop_counts().get("Global", {}).items()}
    return Instrumented(live.peak, int(flops.get_total_flops()), sdpa.backend(), by_op, result)


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 1024, seconds: float = 0.5) -> float:
    """Achievable matmul FLOP/s on this device and dtype: the best of repeated (size x size) @ (size x size)."""
    from .device import synchronize

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    best = float("inf")
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best
