"""``checkpointing``: activation (gradient) checkpointing per block, the guide's "Don't store all activations.
Recompute during backward pass. Trade compute for memory."

A cell is one sequence length n: a ``DecoderLM`` of the cell's mixer runs one training step (forward, loss,
backward; gradients created afresh) without and with ``LMConfig.activation_checkpointing`` (each block wrapped in
``torch.utils.checkpoint``, non-reentrant: only the block's input is kept, the block is recomputed in backward).
Rows per ``checkpointing`` (false / true): ``peak_tensor_bytes`` (``harness.measure.LiveTensorBytes``: exact,
deterministic, every device), ``cuda_peak_bytes`` on CUDA, ``time_s`` (median), and per cell ``memory_ratio`` =
peak with / without and ``time_ratio`` = time with / without.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, PositiveInt

from architectures.backbone import DecoderLM, LMConfig

from ..device import allocator_peak
from ..measure import LiveTensorBytes
from ..training import lm_loss
from . import Benchmark, Cell, RunContext, metric, register_benchmark
from ._optim import failed_lines, header, md, ok_rows, save_plot, timed


class CheckpointingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    n_layers: PositiveInt = 4


def train_step_fn(model: DecoderLM, tokens: torch.Tensor):
    """One forward + backward on a fixed batch, gradients set to None first (so they are created inside)."""
    def step():
        model.zero_grad(set_to_none=True)
        lm_loss(model(tokens[:, :-1]), tokens[:, 1:]).backward()
    return step


def peak_train_bytes(model: DecoderLM, tokens: torch.Tensor) -> int:
    """Peak bytes of the storages created by one training step (activations, saved tensors, gradients)."""
    step = train_step_fn(model, tokens)
    with LiveTensorBytes() as live:
        step()
    return live.peak


@register_benchmark("checkpointing")
class Checkpointing(Benchmark):
    modes = ("train",)
    Params = CheckpointingParams
    description = "training step peak memory and time without and with activation checkpointing per block"

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        gen = torch.Generator().manual_seed(cell.seed)
        tokens = torch.randint(0, 256, (cell.batch, cell.seq_len + 1), generator=gen).to(ctx.device)
        rows, figures = [], {}
        for ckpt in (False, True):
            torch.manual_seed(cell.seed)
            cfg = LMConfig(mixer=cell.mixer_name, mixer_hparams=dict(cell.hparams), impl=cell.impl,
                           d_model=cell.d_model, n_heads=cell.n_heads, n_layers=self.params.n_layers,
                           activation_checkpointing=ckpt)
            model = DecoderLM(cfg).to(ctx.device, getattr(torch, cell.dtype)).train()
            peak = peak_train_bytes(model, tokens)
            rows.append(metric("peak_tensor_bytes", peak, "B", checkpointing=ckpt))
            if ctx.device.type == "cuda":
                with allocator_peak(ctx.device) as cuda_peak:
                    train_step_fn(model, tokens)()
                rows.append(metric("cuda_peak_bytes", cuda_peak["peak_bytes"], "B", checkpointing=ckpt))
            t, row = timed(train_step_fn(model, tokens), ctx, checkpointing=ckpt)
            rows.append(row)
            figures[ckpt] = (peak, t)
        rows += [metric("memory_ratio", figures[True][0] / figures[False][0], "ratio"),
                 metric("time_ratio", figures[True][1] / figures[False][1], "ratio")]
        return rows

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        """Peak memory and time with and without checkpointing against n: the memory saved vs the time paid."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lines = header(entry, "checkpointing") + failed_lines(run, entry)
        rows = ok_rows(run, entry)
        if rows.empty:
            return lines
        keys = ["mixer", "batch", "d_model", "dtype", "seq_len"]
        per = rows[rows["metric"].isin(["peak_tensor_bytes", "time_s"])].copy()
        per["what"] = per["metric"] + per["checkpointing"].map({True: " (ckpt)", False: " (plain)"})
        wide = per.pivot_table(index=keys, columns="what", values="value", aggfunc="first")
        for m in ("memory_ratio", "time_ratio"):
            wide[m] = rows[rows["metric"] == m].set_index(keys)["value"]
        wide = wide.reset_index()
        for c in [c for c in wide if c.startswith("peak_tensor_bytes")]:
            wide[c] = wide[c] / 2 ** 20
        wide = wide.rename(columns=lambda c: c.replace("peak_tensor_bytes", "peak MiB").replace("time_s", "step s"))
        lines += ["One training step (forward + backward) of the entry's model; peak MiB = exact peak of live "
                  "tensor storage created in the step (activations, saved tensors, gradients); ratios = with / "
                  "without checkpointing.", "", md(wide, ".4g"), ""]
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, style in (("memory_ratio", "o-"), ("time_ratio", "s--")):
            g = rows[rows["metric"] == m].sort_values("seq_len")
            ax.plot(g["seq_len"], g["value"], style, label=m)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(xscale="log", xlabel="sequence length n", ylabel="with / without checkpointing",
               title=f"{entry.label}: memory saved vs time paid")
        ax.legend()
        return lines + [save_plot(fig, run, f"{entry.label}-ratios"), ""]
