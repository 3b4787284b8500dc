"""``attention_memory``: what one forward of a mixer materialises, at lengths too long to run, on the meta device.

For each mixer cell (batch, seq_len, d_model, n_heads from the sweep) the layer is built on meta and its forward run
under a dispatch mode that records every tensor it creates. Rows: ``largest_tensor_values`` (elements of the largest
tensor, e.g. the (B, H, n, n) score matrix of explicit attention), ``largest_tensor_values_per_head`` (the same
divided by batch x heads: the n^2 "attention values" of one head), ``largest_tensor_bytes`` (at the cell's dtype) and,
for lengths up to ``real_up_to``, ``peak_tensor_bytes`` of a real forward on this device (``measure.LiveTensorBytes``).
The guide's "32K tokens: 1 billion attention values" and "n=512, d=512: ~512MB per batch element" are held to these.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, PositiveInt
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from architectures.registry import create_mixer

from ..measure import instrumented
from . import Benchmark, Cell, RunContext, metric, register_benchmark


class LargestTensor(TorchDispatchMode):
    """The largest tensor (by elements) any op returns inside the region; works on meta tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.numel, self.bytes, self.shape = 0, 0, ()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.bytes, self.shape = t.numel(), t.numel() * t.element_size(), tuple(t.shape)
        return out


class AttentionMemoryParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    real_up_to: PositiveInt = 2048  # lengths up to this also run for real, for the measured peak of live tensors


@register_benchmark("attention_memory")
class AttentionMemory(Benchmark):
    modes = ("forward",)
    Params = AttentionMemoryParams
    description = "the largest tensor a mixer's forward materialises (meta device), and the real peak where it fits"

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        dtype = getattr(torch, cell.dtype)
        with torch.device("meta"):
            mixer = create_mixer(cell.mixer_name, cell.d_model, cell.n_heads, impl=cell.impl, **cell.hparams)
        mixer = mixer.to(dtype)
        x = torch.zeros(cell.batch, cell.seq_len, cell.d_model, device="meta", dtype=dtype)  # (B, T, D)
        with torch.no_grad(), LargestTensor() as largest:
            mixer(x)
        ex = {"largest_shape": str(largest.shape)}
        rows = [metric("largest_tensor_values", largest.numel, "count", **ex),
                metric("largest_tensor_values_per_head", largest.numel / (cell.batch * cell.n_heads), "count", **ex),
                metric("largest_tensor_bytes", largest.bytes, "B", **ex)]
        if cell.seq_len <= self.params.real_up_to:
            torch.manual_seed(cell.seed)
            real = create_mixer(cell.mixer_name, cell.d_model, cell.n_heads, impl=cell.impl, **cell.hparams)
            real = real.to(device=ctx.device, dtype=dtype)
            xr = torch.randn(cell.batch, cell.seq_len, cell.d_model, device=ctx.device, dtype=dtype)
            with torch.no_grad():
                inst = instrumented(lambda: real(xr))
            rows.append(metric("peak_tensor_bytes", inst.peak_tensor_bytes, "B"))
        return rows

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        from ..model_report import attention_memory_section

        return attention_memory_section(run, entry)
