"""``precision``: fp32 against bf16 (or fp16) training (the guide: "Mixed precision (FP16): Half memory, 2-3x
speedup").

A cell is one dtype of the sweep. The recipe is the device's (``harness.device.precision_recipe``): on CUDA fp32
master weights under ``torch.autocast`` (mixed precision); on CPU the weights themselves in the dtype. Rows (every
row carries ``recipe``): ``param_bytes`` (the model's parameters, from their storage), ``step_peak_tensor_bytes``
(exact peak of the storage created by one forward + backward: activations, saved tensors, gradients),
``memory_bytes`` = the two together, ``cuda_peak_bytes`` on CUDA, ``time_s`` of that step (median) and
``tokens_per_s``, and the quality after the same fixed budget (``training``: steps x batch x seq_len):
``val_bpb`` and ``final_train_loss``.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from architectures.backbone import DecoderLM, LMConfig

from ..device import allocator_peak, in_precision, precision_recipe
from ..measure import LiveTensorBytes
from ..training import lm_loss
from . import Benchmark, Cell, RunContext, SkipCell, metric, register_benchmark
from ._optim import TinyLMTraining, failed_lines, header, md, model_bytes, ok_rows, timed, train_tiny_lm


class PrecisionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    training: TinyLMTraining = Field(default_factory=TinyLMTraining)
    n_layers: PositiveInt = 2


@register_benchmark("precision")
class Precision(Benchmark):
    modes = ("train",)
    Params = PrecisionParams
    description = "fp32 vs bf16 training: memory, step time, loss after a fixed budget"

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        dtype = getattr(torch, cell.dtype)
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise SkipCell(f"training runs in float32, bfloat16 or float16, not {cell.dtype}")
        recipe = precision_recipe(dtype, ctx.device)
        cfg = LMConfig(mixer=cell.mixer_name, mixer_hparams=dict(cell.hparams), impl=cell.impl,
                       d_model=cell.d_model, n_heads=cell.n_heads, n_layers=self.params.n_layers)
        gen = torch.Generator().manual_seed(cell.seed)
        tokens = torch.randint(0, 256, (cell.batch, cell.seq_len + 1), generator=gen).to(ctx.device)
        memory, t, rows = self._step_figures(cfg, dtype, tokens, cell, ctx)
        if dtype != torch.float32:  # the fp32 step in the same cell, so that the ratios share the conditions
            memory32, t32, _ = self._step_figures(cfg, torch.float32, tokens, cell, ctx)
            rows += [metric("memory_vs_fp32", memory / memory32, "ratio"), metric("speedup_vs_fp32", t32 / t, "x")]

        def wrap(m):
            return in_precision(m, dtype, ctx.device)
        wrap.__name__ = f"precision-{cell.dtype}"
        _, info = train_tiny_lm(cfg, self.params.training, cell.seed, ctx, wrap=wrap)
        rows += [metric("val_bpb", info["val_bpb"], "bits/byte"),
                 metric("final_train_loss", info["final_train_loss"], "nats/byte"),
                 metric("train_seconds", info["train_seconds"], "s")]
        return [{**r, "recipe": recipe} for r in rows]

    @staticmethod
    def _step_figures(cfg: LMConfig, dtype: torch.dtype, tokens: torch.Tensor, cell: Cell,
                      ctx: RunContext) -> tuple[int, float, list[dict[str, Any]]]:
        """Memory (parameters + one step's peak created storage) and median time of a forward + backward step."""
        torch.manual_seed(cell.seed)
        model = in_precision(DecoderLM(cfg).to(ctx.device), dtype, ctx.device).train()

        def step():
            model.zero_grad(set_to_none=True)
            lm_loss(model(tokens[:, :-1]), tokens[:, 1:]).backward()

        with LiveTensorBytes() as live:
            step()
        params = model_bytes(model)
        rows = [metric("param_bytes", params, "B"), metric("step_peak_tensor_bytes", live.peak, "B"),
                metric("memory_bytes", params + live.peak, "B")]
        if ctx.device.type == "cuda":
            with allocator_peak(ctx.device) as peak:
                step()
            rows.append(metric("cuda_peak_bytes", peak["peak_bytes"], "B"))
        t, row = timed(step, ctx)
        tokens_per_step = tokens.shape[0] * (tokens.shape[1] - 1)
        return params + live.peak, t, rows + [row, metric("tokens_per_s", tokens_per_step / t, "tok/s")]

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        """One column per dtype: memory, speed, quality after the same budget; ratios to fp32."""
        lines = header(entry, "precision") + failed_lines(run, entry)
        rows = ok_rows(run, entry)
        if rows.empty:
            return lines
        wide = rows.pivot_table(index=["mixer", "seq_len", "batch", "d_model", "dtype", "recipe"], columns="metric",
                                values="value", aggfunc="first").reset_index()
        lines += ["Memory = parameters + the exact peak of one step's created storage (activations, gradients); "
                  "time = one forward + backward (median); quality after the same training budget. Recipe: "
                  "`weights` = the weights cast to the dtype (CPU), `autocast` = fp32 weights under autocast "
                  "(CUDA). `memory_vs_fp32` and `speedup_vs_fp32` compare with an fp32 step measured in the same cell.", "",
                  md(wide, ".4g"), ""]
        return lines
