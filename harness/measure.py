"""Deterministic measurements, the same on every device: live tensor bytes, FLOPs, which SDPA kernel ran.

``instrumented(fn)`` runs ``fn`` once under three dispatch-level observers and returns what they saw:
- ``LiveTensorBytes``: the peak of the bytes held by tensor storages created inside the region (a
  ``TorchDispatchMode`` that sees every op's outputs and a weakref finaliser on each new storage). Parameters and
  inputs made before the region are not counted, so the figure is the activation / workspace peak. It is exact and
  repeatable, which is why CI gates on it; on CUDA the allocator peak is recorded beside it.
- ``FlopCounterMode`` with our formulas for every fused SDPA op (PyTorch 2.13 counts the CPU ones as 0 and every
  one as if causal masking skipped nothing), and ``MaskedWork``, which hears the ops that mask computed scores.
- the aten SDPA ops that ran, mapped to a backend name (``sdpa_backend`` in the result rows).

FLOP convention (``FLOP_CONVENTION``, printed by the report):

- Only matrix products are counted (FlopCounterMode's registry: mm, bmm, addmm, baddbmm, einsum as bmm,
  convolutions, fused attention), 2 FLOPs per multiply-add; elementwise work (softmax, gates, scans) is not.
- ``flops_executed``: the products the kernels performed. Explicit ops are counted as dispatched, masked entries
  included. A fused causal SDPA kernel (FlashAttention, memory-efficient, cuDNN, the CPU flash port) skips the
  key blocks above the diagonal; it is credited with the (query, key) pairs the causal mask keeps, n(n+1)/2 of n^2,
  which is a lower bound of what it runs (the diagonal blocks it visits are partly masked; that kernel-specific
  surplus, about block/n, is not modelled). A fused kernel given an explicit mask computes every block: full count.
- ``flops``: the algorithmic FLOPs of the computation, the convention of the FlashAttention benchmarks (which halve
  the causal attention products): products over the (query, key) pairs the method's mask keeps. It is
  ``flops_executed`` less the work an op spends on score entries it computes and then masks, which the op reports
  through ``architectures.flop_notes.masked_scores`` (exact attention: standard, gqa, mla, alibi, transformer_xl; the
  block-local bands of sliding_window and longformer). ``standard`` and ``flash`` therefore have the same ``flops``
  and differ in ``flops_executed``. Ops that do not report (the strided / LSH / routing patterns, the intra-chunk
  products of the chunkwise linear-recurrent forms, SDPA's math backend) count their blocks as executed.
- ``flops_per_s`` = ``flops`` / time: useful work per second, comparable between implementations of one algorithm
  (FlashAttention's TFLOP/s). ``peak_fraction`` = ``flops_executed`` / time / measured matmul peak: the hardware's
  utilisation. Both are bounded by the peak (algorithmic <= credited executed <= what ran), so a fraction above 1
  is measurement noise (the peak and the cell timed at different moments of a shared machine), never accounting.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from architectures import flop_notes

aten = torch.ops.aten


FLOP_CONVENTION = (
    "FLOPs count matrix products (2 per multiply-add). `flops` are algorithmic: products over the (query, key) "
    "pairs the mask keeps, so causal exact attention counts n(n+1)/2 of n^2 pairs (FlashAttention's convention) "
    "whether a kernel skips the masked blocks (flash) or computes and discards them (standard). `flops_executed` "
    "are what the kernels ran (standard's full masked matrix; a fused causal kernel is credited with the kept pairs, "
    "a lower bound). `flops_per_s` = flops / time; `peak_fraction` = flops_executed / time / measured matmul peak, "
    "so it is bounded by 1 up to timing noise."
)


def causal_pairs(n_q: int, n_k: int) -> int:
    """(query, key) pairs kept by SDPA's ``is_causal`` mask (top-left aligned: query i sees keys 0..i)."""
    full_rows = min(n_q, n_k)  # rows i < n_k see i + 1 keys; later rows see all n_k
    return full_rows * (full_rows + 1) // 2 + (n_q - full_rows) * n_k


def _sdpa_args(op, args, kwargs) -> dict:
    names = [a.name for a in op.default._schema.arguments]
    return {**dict(zip(names, args)), **kwargs}


def _mask_kept_fraction(mask: torch.Tensor | None) -> float:
    """Fraction of (query, key) entries an explicit SDPA mask keeps (bool: True; float bias: not -inf)."""
    if mask is None:
        return 1.0
    with _disable_current_modes():
        kept = mask if mask.dtype == torch.bool else mask != float("-inf")
        return float(kept.float().mean())


def _sdpa_formula(op, backward: bool):
    """Executed FLOPs of one fused SDPA op: PyTorch's formula, scaled to the kept pairs when the kernel is causal."""
    def formula(*args, out_val=None, **kwargs) -> int:
        a = _sdpa_args(op, args, kwargs)
        q, k, v = a["query"].shape, a["key"].shape, a["value"].shape
        full = (sdpa_backward_flop_count(a[next(n for n in a if n.startswith("grad_out"))].shape, q, k, v) if backward
                else sdpa_flop_count(q, k, v))
        if a.get("is_causal"):
            return full // (q[-2] * k[-2]) * causal_pairs(q[-2], k[-2])  # full is linear in the pairs
        mask = a.get("attn_mask", a.get("attn_bias"))
        if mask is not None and MaskedWork.active:  # computed in full, partly discarded: algorithmic is less
            MaskedWork.active[-1].add(round(full * (1 - _mask_kept_fraction(mask))))
        return full
    formula._get_raw = True  # FlopCounterMode passes the tensors themselves (we read is_causal and the mask)
    return formula


_FUSED_SDPA = ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
               "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
               "_scaled_dot_product_fused_attention_overrideable")
SDPA_FLOP_FORMULAS = {getattr(aten, name + suffix): _sdpa_formula(getattr(aten, name + suffix), bool(suffix))
                      for name in _FUSED_SDPA for suffix in ("", "_backward") if hasattr(aten, name + suffix)}


class MaskedWork:
    """Listens to ``architectures.flop_notes``: sums the FLOPs ops spend on score entries they compute and then mask
    (forward, and twice that when the gradient of the scores flows back through both products)."""

    active: list["MaskedWork"] = []  # the innermost listening region, for the SDPA formulas

    def __init__(self) -> None:
        self.flops = 0

    def add(self, flops: int) -> None:
        self.flops += flops

    def __call__(self, scores: torch.Tensor, kept: torch.Tensor | None, discarded: torch.Tensor | None, d_qk: int,
                 d_v: int) -> None:
        mask = kept if kept is not None else discarded
        with _disable_current_modes():  # counting must not show up in the bytes / FLOPs being measured
            per_mask = int(mask.sum()) if discarded is not None else mask.numel() - int(mask.sum())
            if scores.numel() % mask.numel() == 0:  # mask broadcast over leading (batch, head) dims
                entries = per_mask * (scores.numel() // mask.numel())
            else:
                full = torch.broadcast_to(mask, scores.shape)
                entries = int(full.sum()) if discarded is not None else full.numel() - int(full.sum())
        forward = 2 * entries * (d_qk + d_v)
        self.add(forward)
        if scores.requires_grad and torch.is_grad_enabled():
            # backward: grad of both operands of Q K^T and of weights @ V, each a product over the same entries
            scores.register_hook(lambda grad: self.add(2 * forward))

    def __enter__(self) -> "MaskedWork":
        flop_notes.LISTENERS.append(self)
        MaskedWork.active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        flop_notes.LISTENERS.remove(self)
        MaskedWork.active.remove(self)


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
    flops: int  # algorithmic (FLOP_CONVENTION)
    flops_executed: int  # what the kernels ran (FLOP_CONVENTION)
    sdpa_backend: str | None
    flops_by_op: dict[str, int] = field(default_factory=dict)
    result: Any = None


def count_flops_mode() -> FlopCounterMode:
    """PyTorch's counter with our fused-SDPA formulas: it counts executed FLOPs (see FLOP_CONVENTION)."""
    return FlopCounterMode(display=False, custom_mapping=SDPA_FLOP_FORMULAS)


def instrumented(fn: Callable[[], Any]) -> Instrumented:
    """Run ``fn`` once under the observers; ``flops`` = executed less the masked work the ops reported."""
    flops, masked, live, sdpa = count_flops_mode(), MaskedWork(), LiveTensorBytes(), SdpaRecorder()
    with flops, masked, live, sdpa:
        result = fn()
    by_op = {str(k): int(v) for k, v in flops.get_flop_counts().get("Global", {}).items()}
    executed = int(flops.get_total_flops())
    return Instrumented(live.peak, executed - masked.flops, executed, sdpa.backend(), by_op, result)


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...] | None = None,
                        seconds: float = 0.5) -> float:
    """Achievable matmul FLOP/s on this device and dtype: the best of repeated (size x size) @ (size x size) over
    several sizes and (CPU) thread counts (``harness.device.matmul_peak_sizes`` / ``matmul_peak_threads``),
    ``seconds`` per size and thread count.

    One size is not enough: on our 2-core VM a 1024 fp32 matmul runs at 20 GFLOP/s per core and a 256 one at 100
    (the larger one streams from a shared L3), and an attention kernel working on cache-sized tiles reaches the
    latter. A peak understated like that made fused attention read 180% of "peak"."""
    from .device import matmul_peak_sizes, matmul_peak_threads

    best_flops = 0.0
    with matmul_peak_threads(device) as thread_counts:
        for threads in thread_counts:
            if threads is not None:
                torch.set_num_threads(threads)
            for size in sizes or matmul_peak_sizes(device):
                best_flops = max(best_flops, _best_matmul(device, dtype, size, seconds))
    return best_flops


def _best_matmul(device: torch.device, dtype: torch.dtype, size: int, seconds: float) -> float:
    """FLOP/s of the fastest of repeated (size x size) @ (size x size) calls over ``seconds``."""
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
