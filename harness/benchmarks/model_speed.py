"""``model_speed``: the tiny flavour of each model preset, measured end to end on this device.

Modes (the cell's ``mode``):
- ``prefill``: the forward (decoders: ``prefill``, which also builds the decode state) over (batch, seq_len) tokens;
  vision models over one batch of images of their own size (at the first seq_len only). Rows: ``time_s`` (median,
  quartiles beside), ``tokens_per_s``, ``peak_tensor_bytes`` (live tensors created by one call, ``measure.py``),
  ``flops``.
- ``decode``: one ``step`` from the state after seq_len tokens (the state is returned, never mutated, so one state
  serves every repeat). Rows: ``time_s``, ``tokens_per_s`` (batch / time), ``state_bytes`` (the measured state) and
  ``state_bytes_formula`` (``model.state_bytes``). Decoders, and encoder-decoders (one target step after a source
  and a target of seq_len tokens each: the state holds both caches).
- ``perplexity``: next-byte training on the embedded corpus (``harness.corpora``) for ``steps`` steps of
  (``train_batch``, ``train_seq_len``) with ``harness.training`` (AdamW, warm-up + cosine), plus ``aux_coef`` x the MoE
  load-balancing loss, then validation bits-per-byte over every byte of the first ``eval_bytes`` of the validation split
  (``harness.lm.causal_bits_per_byte``). Decoders with a vocabulary of at least 256 (bytes) only. Rows: ``val_bpb``,
  ``val_ppl``, ``train_tokens``, ``train_seconds``, ``tokens_per_s`` (training), ``model_params``.

Variants (``variants:``) are measured like presets: e.g. the tiny Kimi Linear with MLA in every layer, beside the
3:1 hybrid, for the measured side of the "6.3x faster decoding" claim.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from pydantic import Field, PositiveFloat, PositiveInt

from architectures.mixer import measured_state_bytes

from ..config import ResolvedMixer
from ..corpora import CorpusSpec, causal_batches, head_bytes, load_corpus, resolved_spec
from ..device import time_callable
from ..lm import causal_bits_per_byte
from ..measure import instrumented
from ..training import TrainConfig, lm_loss, train
from . import Benchmark, Cell, RunContext, SkipCell, metric, register_benchmark
from .model_figures import ModelSelection, build_cell_model, model_cells


class SpeedParams(ModelSelection):
    corpus: CorpusSpec = Field(default_factory=CorpusSpec)  # perplexity: default pydoc_data (offline)
    train_seq_len: PositiveInt = 128  # perplexity: the context trained and scored (the sweep's seq_len is for speed)
    train_batch: PositiveInt = 8  # perplexity: sequences per step (the sweep's batch is for speed)
    steps: PositiveInt = 150  # perplexity: token budget = steps x batch x train_seq_len
    lr: PositiveFloat = 3e-3
    warmup_steps: int = Field(default=15, ge=0)
    aux_coef: float = Field(default=0.01, ge=0)  # weight of the MoE load-balancing loss in training
    eval_bytes: PositiveInt = 16384  # validation bytes scored


@register_benchmark("model_speed")
class ModelSpeed(Benchmark):
    modes = ("prefill", "decode", "perplexity")
    Params = SpeedParams
    description = "tiny flavours measured: prefill and decode tokens/s, peak memory, perplexity at one budget"

    def cells(self, mixers: list[ResolvedMixer]) -> Iterator[Cell]:
        sweep = self.entry.sweep_for(self.device.type)
        for mode in self.entry.modes:
            lens = [self.params.train_seq_len] if mode == "perplexity" else sorted(sweep.seq_len)
            for b in [self.params.train_batch] if mode == "perplexity" else sweep.batch:
                for cell in model_cells(self, mode, lens):
                    yield Cell(**{**cell.fields(), "batch": b})

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        preset, model, ex = build_cell_model(cell, ctx.device)
        ex["model_params"] = model.num_params()
        if cell.mode == "perplexity":
            return self._perplexity(cell, ctx, preset, model, ex)
        model.eval()
        from architectures.models.figures import max_context

        limit = max_context(model) - (1 if cell.mode == "decode" else 0)  # a step after n tokens is position n
        if preset.kind != "vision" and cell.seq_len > limit:
            raise SkipCell(f"{cell.seq_len} tokens exceed {cell.mixer}'s learned position table ({limit} usable)")
        if cell.mode == "decode":
            return self._decode(cell, ctx, preset, model, ex)
        from architectures.models.figures import example_input

        if preset.kind == "vision" and cell.seq_len != min(self.entry.sweep_for(ctx.device.type).seq_len):
            raise SkipCell("a vision model's input has its own fixed size: measured at the first seq_len only")
        x = example_input(model, preset.kind, cell.seq_len, cell.batch)
        call = (lambda: model.prefill(x)) if preset.kind == "decoder" else \
            (lambda: model(*x)) if isinstance(x, tuple) else (lambda: model(x))
        tokens = cell.batch * (model.n_positions if preset.kind == "vision" else cell.seq_len)
        with torch.no_grad():
            inst = instrumented(call)
            t = self._time(call, ctx)
        return [metric("time_s", t.median_s, "s", q1_s=t.q1_s, q3_s=t.q3_s, repeats=t.repeats, **ex),
                metric("tokens_per_s", tokens / t.median_s, "tok/s", **ex),
                metric("peak_tensor_bytes", inst.peak_tensor_bytes, "B", **ex),
                metric("flops", inst.flops, "FLOP", **ex)]

    @staticmethod
    def _time(fn, ctx: RunContext):
        tm = ctx.timing
        return time_callable(fn, ctx.device, warmup=tm.warmup, min_run_time=tm.min_run_time_s,
                             min_repeats=tm.min_repeats, max_time=tm.max_time_s)

    def _decode(self, cell: Cell, ctx: RunContext, preset, model, ex) -> list[dict[str, Any]]:
        """Decoders: one step after seq_len tokens. Encoder-decoders: one target step after a source of seq_len
        tokens and seq_len target tokens (the state holds both: cross- and self-attention caches)."""
        if preset.kind not in ("decoder", "encoder-decoder"):
            raise SkipCell(f"{cell.mixer} ({preset.kind}) has no step-by-step decoding")
        tokens = torch.zeros(cell.batch, cell.seq_len, dtype=torch.long, device=ctx.device)  # (B, T)
        last = torch.zeros(cell.batch, dtype=torch.long, device=ctx.device)  # (B,)
        prefix = (tokens,) if preset.kind == "decoder" else (tokens, tokens.clone())
        if preset.kind == "encoder-decoder":
            ex["context"] = "source of seq_len tokens + seq_len target tokens"
        with torch.no_grad():
            _, state = model.prefill(*prefix)
            t = self._time(lambda: model.step(last, state), ctx)
        dtype = next(model.parameters()).dtype
        return [metric("time_s", t.median_s, "s", q1_s=t.q1_s, q3_s=t.q3_s, repeats=t.repeats, **ex),
                metric("tokens_per_s", cell.batch / t.median_s, "tok/s", **ex),
                metric("state_bytes", measured_state_bytes(state), "B", **ex),
                metric("state_bytes_formula", model.state_bytes(cell.batch, cell.seq_len, dtype), "B", **ex)]

    def _perplexity(self, cell: Cell, ctx: RunContext, preset, model, ex) -> list[dict[str, Any]]:
        p: SpeedParams = self.params
        if preset.kind != "decoder":
            raise SkipCell(f"next-byte perplexity needs a decoder; {cell.mixer} is {preset.kind}")
        vocab = model.cfg.vocab_size
        if vocab < 256:
            raise SkipCell(f"the tiny vocabulary ({vocab}) cannot hold bytes")
        corpus = load_corpus(resolved_spec(p.corpus, ctx.suite_dir))
        val = head_bytes(corpus.val, p.eval_bytes)
        tcfg = TrainConfig(steps=p.steps, lr=p.lr, warmup_steps=p.warmup_steps, eval_every=0, seed=cell.seed)
        batches = causal_batches(corpus.train, cell.seq_len, cell.batch, cell.seed, ctx.device)

        def loss_fn(m, inputs, targets):
            return lm_loss(m(inputs), targets) + p.aux_coef * m.aux_loss

        result = train(model, batches, tcfg, loss_fn=loss_fn)
        final = causal_bits_per_byte(model, val, cell.seq_len, device=ctx.device)
        ex = {**ex, "corpus": corpus.description, "steps": p.steps, "lr": p.lr}
        return [metric("val_bpb", final["val_bpb"], "bits/byte", **ex),
                metric("val_ppl", final["val_ppl"], "per byte", **ex),
                metric("train_tokens", result.tokens, "tokens", **ex),
                metric("train_seconds", result.seconds, "s", **ex),
                metric("tokens_per_s", result.tokens_per_s, "tok/s", **ex),
                metric("final_train_loss", result.curve[-1]["train_loss"] if result.curve else math.nan, "nats", **ex)]

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        from ..model_report import speed_section

        return speed_section(run, entry)
