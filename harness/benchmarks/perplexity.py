"""``perplexity``: byte-level language modelling quality of each mixer, on equal terms.

For every mixer cell (``seq_len`` = the training context length L, ``batch``, ``d_model``, ``n_heads``, ``dtype``
from the sweep) a ``DecoderLM`` with ``n_layers`` blocks of that mixer is trained from the same seed, on the same
batches (seeded offsets into the training split), for the same number of steps (token budget = steps x batch x L),
with the same optimiser and schedule (``harness.training``: AdamW, warm-up + cosine), once per learning rate in
``lrs``; each run is scored on the validation split (``harness.lm``: every byte once, non-overlapping windows of L).
The best learning rate per cell is the one with the lowest validation bits-per-byte (ties: the smaller lr).

Objectives (the cell's ``mode``; also the ``objective`` key of every row):
- ``causal_lm``: next-byte prediction, for mixers with a causal mode.
- ``masked_lm``: a bidirectional encoder (``LMConfig(causal=False)``, vocabulary 257 with ``[MASK]``) predicts
  ~``mask_prob`` of the bytes, replaced by ``[MASK]``. Bidirectional-only mixers (no causal mode) always get this
  objective, and then the ``baseline`` mixer (``standard``) gets a ``masked_lm`` cell too, so their quality has a
  bidirectional reference under the same budget. ``modes: [causal_lm, masked_lm]`` runs both for every mixer that
  can.

The sweep (``harness.training.lr_sweep``): every lr of ``lrs`` at the cell's seed, the best by validation bpb, then
``seeds - 1`` further trainings at the best lr with seeds ``seed + 1, ...`` (initial weights and batch order change;
corpus, validation text and schedule do not). The best lr's sweep run is its first seed.

Rows (per training; every row carries ``lr`` (float), ``train_seed``, ``sweep_role`` (``sweep`` or ``seed``),
``best`` (bool: this lr was the cell's best; true on every seed run at it), the budget ``steps`` and
``tokens_per_step``, ``objective``, ``corpus``, ``curve`` (path under OUT) and ``checkpoint`` (path under OUT, on
the best lr's first-seed rows only)):

    val_bpb (bits/byte)  val_ppl (2**bpb, per byte)  val_loss (nats/byte)  val_bytes  tokens_per_s (training)
    train_tokens  train_seconds  model_params  lr

Files: ``OUT/curves/<cell>-lr<lr>[-seed<k>].json`` (training loss per step, validation bpb every ``eval_every`` steps on the
first ``curve_eval_bytes`` of the validation split, the final figures) and ``OUT/checkpoints/<cell>.pt`` (the best
lr's model: LMConfig, state_dict, objective, context length, the validation text; ``harness.lm.load_checkpoint``;
``python -m harness lm-eval`` runs lm-eval tasks on it).

Quality against the baseline (``harness.analysis.quality_table``): ``100 x ppl(baseline) / ppl(mixer)`` per
objective and cell shape, from the best rows.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import torch
from pydantic import (BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, create_model,
                      model_validator)

import architectures
from architectures.backbone import DecoderLM, LMConfig

from ..config import ResolvedMixer
from ..corpora import CorpusSpec, causal_batches, head_bytes, load_corpus, masked_batches, resolved_spec
from ..lm import BYTES, MASK_ID, Autocast, ByteLogits, causal_bits_per_byte, masked_bits_per_byte, save_checkpoint
from ..training import IGNORE_INDEX, TrainConfig, lr_sweep, train
from . import Benchmark, Cell, RunContext, SkipCell, metric, register_benchmark

OBJECTIVES = ("causal_lm", "masked_lm")


class TrainingParams(BaseModel):
    """What every mixer is trained and scored with (the same for all of them)."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    corpus: CorpusSpec = Field(default_factory=CorpusSpec)  # default: pydoc_data (offline)
    n_layers: PositiveInt = 2
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    ffn: Literal["swiglu", "gelu"] = "swiglu"
    steps: PositiveInt = 300  # token budget = steps x batch x seq_len
    lrs: list[PositiveFloat] = Field(default=[3e-3], min_length=1)  # peak learning rates tried; the best is kept
    seeds: PositiveInt = 1  # trainings at the best lr (its sweep run is the first): the spread over seeds
    warmup_steps: int = Field(default=30, ge=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float = Field(default=1.0, ge=0)
    eval_every: int = Field(default=100, ge=0)  # validation bpb for the curve every k steps (0: only at the end)
    curve_eval_bytes: PositiveInt = 16384  # the curve's evaluations use the first bytes of the validation split
    eval_bytes: Optional[PositiveInt] = None  # the final score uses the first eval_bytes of it (None: all of it)
    eval_batch: PositiveInt = 16  # windows per evaluation forward
    mask_prob: float = Field(default=0.15, gt=0, lt=1)  # masked_lm: fraction of bytes masked


# The same fields, all optional: what a device profile may override.
TrainingOverride = create_model(
    "TrainingOverride", __config__=ConfigDict(extra="forbid", strict=True, frozen=True),
    **{name: (Optional[f.annotation], None) for name, f in TrainingParams.model_fields.items()})


class PerplexityParams(TrainingParams):
    baseline: str = "standard"  # the reference of quality %, and the masked_lm baseline of bidirectional-only mixers
    save_checkpoints: bool = True
    profiles: dict[Literal["cpu", "cuda"], TrainingOverride] = Field(default_factory=dict)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _profiles_valid(self) -> "PerplexityParams":
        for device_type in self.profiles:
            try:
                self.training_for(device_type)
            except ValidationError as err:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
                raise ValueError(f"profiles.{device_type}: {problems}") from None
        return self

    def training_for(self, device_type: str) -> TrainingParams:
        """The training settings on a device: these params with the device's profile applied."""
        base = self.model_dump(include=set(TrainingParams.model_fields))
        override = self.profiles.get(device_type)
        if override is not None:
            base.update(override.model_dump(exclude_none=True))
        return TrainingParams.model_validate(base)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def _seed_tag(seed: int, cell_seed: int) -> str:
    """The curve file's seed suffix: none for the sweep's seed (the file names of earlier runs), -seed<k> else."""
    return "" if seed == cell_seed else f"-seed{seed}"


@register_benchmark("perplexity")
class Perplexity(Benchmark):
    modes = OBJECTIVES
    Params = PerplexityParams
    description = "byte-level LM: train every mixer on the same budget, validation bits-per-byte, quality %"

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        from ._perplexity_report import section

        return section(run, entry)

    @property
    def training(self) -> TrainingParams:
        return self.params.training_for(self.device.type)

    # ---- the grid -----------------------------------------------------------------------------------------------
    def objectives(self, m: ResolvedMixer) -> list[str]:
        """Which objectives a mixer is trained with (see the module docstring)."""
        if m.missing:
            return ["causal_lm"]  # recorded as missing by the runner
        modes = architectures.get_mixer(m.name).spec.modes
        wanted = set(self.entry.modes)
        out = []
        if "causal_lm" in wanted and "causal" in modes:
            out.append("causal_lm")
        if "bidirectional" in modes and ("masked_lm" in wanted or "causal" not in modes):
            out.append("masked_lm")
        return out or ["causal_lm"]  # neither: run_cell explains why it is skipped

    def _baseline(self, mixers: list[ResolvedMixer]) -> ResolvedMixer:
        name = self.params.baseline
        for m in mixers:
            if m.label == name:
                return m
        cls = architectures.get_mixer(name)
        return ResolvedMixer(label=name, name=name, impl=cls.spec.default_impl, hparams=dict(cls.spec.default_hparams))

    def cells(self, mixers: list[ResolvedMixer]) -> Iterator[Cell]:
        sweep = self.entry.sweep_for(self.device.type)
        plan = [(m, obj) for m in self.entry.select(mixers) for obj in self.objectives(m)]
        if any(obj == "masked_lm" for _, obj in plan):
            base = self._baseline(mixers)
            if not any(m.label == base.label and obj == "masked_lm" for m, obj in plan):
                plan.insert(0, (base, "masked_lm"))  # the bidirectional reference of masked-LM quality
        for (m, obj), b, d, h, dt in itertools.product(plan, sweep.batch, sweep.d_model, sweep.n_heads, sweep.dtype):
            for n in sorted(sweep.seq_len):
                yield Cell(self.entry.label, self.name, m.label, m.name, m.impl, obj, n, b, d, h, dt,
                           self.suite.seed, dict(m.hparams), m.missing)

    # ---- one cell -----------------------------------------------------------------------------------------------
    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        p = self.training
        cls = architectures.get_mixer(cell.mixer_name)
        objective = cell.mode
        needed = "causal" if objective == "causal_lm" else "bidirectional"
        if needed not in cls.spec.modes:
            raise SkipCell(f"{objective} needs a {needed} mixer; {cell.mixer_name} supports {sorted(cls.spec.modes)}")
        dtype = getattr(torch, cell.dtype)
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise SkipCell(f"training runs in float32 or mixed precision (bfloat16, float16), not {cell.dtype}")
        reason = cls.unavailable_reason(cell.impl, ctx.device, dtype)
        if reason:
            raise SkipCell(reason)

        spec = resolved_spec(p.corpus, ctx.suite_dir)
        corpus = load_corpus(spec)
        val = head_bytes(corpus.val, p.eval_bytes)
        curve_val = head_bytes(val, p.curve_eval_bytes)
        L, B = cell.seq_len, cell.batch
        if len(corpus.train) < L + 1:
            raise ValueError(f"{corpus.description}: the training split ({len(corpus.train)} bytes) is shorter than "
                             f"one window of {L + 1}")
        masked = objective == "masked_lm"
        lm_cfg = LMConfig(mixer=cell.mixer_name, mixer_hparams=dict(cell.hparams), impl=cell.impl,
                          vocab_size=BYTES + 1 if masked else BYTES, d_model=cell.d_model, n_layers=p.n_layers,
                          n_heads=cell.n_heads, norm=p.norm, ffn=p.ffn, causal=not masked)

        def score(model: torch.nn.Module, text: bytes) -> dict[str, float]:
            if masked:
                return masked_bits_per_byte(model, text, L, p.mask_prob, seed=cell.seed, batch_size=p.eval_batch,
                                            device=ctx.device)
            return causal_bits_per_byte(model, text, L, batch_size=p.eval_batch, device=ctx.device)

        stem = _safe(f"{cell.benchmark}-{cell.mixer}-{objective}-n{L}-b{B}-d{cell.d_model}-h{cell.n_heads}"
                     f"-{cell.dtype}-s{cell.seed}")

        def tcfg_for(lr: float, seed: int) -> TrainConfig:
            return TrainConfig(steps=p.steps, lr=lr, warmup_steps=p.warmup_steps, min_lr_ratio=p.min_lr_ratio,
                               weight_decay=p.weight_decay, grad_clip=p.grad_clip, eval_every=p.eval_every,
                               seed=seed)

        def curve_stem(lr: float, seed: int) -> str:
            return f"{stem}-lr{lr:g}{_seed_tag(seed, cell.seed)}"

        def train_one(lr: float, seed: int) -> dict[str, Any]:
            """One training at (lr, seed): seed sets the initial weights and the batch order."""
            torch.manual_seed(seed)
            lm = DecoderLM(lm_cfg).to(ctx.device)
            model: torch.nn.Module = ByteLogits(lm) if masked else lm
            if dtype != torch.float32:
                model = Autocast(model, dtype)
            if masked:
                batches = masked_batches(corpus.train, L, B, seed, p.mask_prob, MASK_ID, IGNORE_INDEX, ctx.device)
            else:
                batches = causal_batches(corpus.train, L, B, seed, ctx.device)
            run: dict[str, Any] = {"diverged": False}
            try:
                result = train(model, batches, tcfg_for(lr, seed),
                               eval_fn=lambda mdl: {"val_bpb": score(mdl, curve_val)["val_bpb"]})
            except FloatingPointError as err:  # the curve of a diverged run is kept too
                run.update(diverged=True, error=str(err))
                self._write_curve(ctx, curve_stem(lr, seed), cell, objective, lr, tcfg_for(lr, seed), run)
                raise
            run.update(final=score(model, val), result=result,
                       state={k: v.detach().cpu().clone() for k, v in lm.state_dict().items()})
            run["curve"] = self._write_curve(ctx, curve_stem(lr, seed), cell, objective, lr, tcfg_for(lr, seed), run)
            return run

        runs = lr_sweep(train_one, p.lrs, cell.seed, p.seeds, badness=lambda r: r["final"]["val_bpb"])
        best = next(r for r in runs if r.best and r.seed == cell.seed)
        n_params = DecoderLM(lm_cfg).num_params()

        checkpoint = None
        if self.params.save_checkpoints and ctx.out is not None:
            lm = DecoderLM(lm_cfg)
            lm.load_state_dict(best.outcome["state"])
            path = ctx.out / "checkpoints" / f"{stem}.pt"
            save_checkpoint(path, lm, objective=objective, seq_len=L, val_text=val.decode("utf-8"),
                            mixer=cell.mixer, seed=cell.seed, lr=best.lr, batch=B, steps=p.steps,
                            mask_prob=p.mask_prob, train_tokens=best.outcome["result"].tokens,
                            val_bpb=best.outcome["final"]["val_bpb"], corpus=corpus.description,
                            corpus_spec=spec.model_dump(mode="json"), train_config=asdict(tcfg_for(best.lr, best.seed)))
            checkpoint = str(path.relative_to(ctx.out))

        rows = []
        for run in runs:
            out = run.outcome or {}
            extra = {"lr": run.lr, "best": run.best, "train_seed": run.seed, "sweep_role": run.role,
                     "objective": objective, "corpus": corpus.description,
                     "curve": None if ctx.out is None else f"curves/{curve_stem(run.lr, run.seed)}.json",
                     "checkpoint": checkpoint if run is best else None, "diverged": run.diverged,
                     "steps": p.steps, "tokens_per_step": L * B}
            if run.diverged:
                extra["diverged_error"] = run.error
            final, result = out.get("final") or {}, out.get("result")
            rows += [metric("val_bpb", final.get("val_bpb"), "bits/byte", **extra),
                     metric("val_ppl", final.get("val_ppl"), "per byte", **extra),
                     metric("val_loss", final.get("val_loss"), "nats/byte", **extra),
                     metric("val_bytes", final.get("bytes"), "B", **extra),
                     metric("tokens_per_s", result.tokens_per_s if result else None, "tok/s", **extra),
                     metric("train_tokens", result.tokens if result else None, "tokens", **extra),
                     metric("train_seconds", result.seconds if result else None, "s", **extra),
                     metric("model_params", n_params, "count", **extra),
                     metric("lr", run.lr, "lr", **extra)]
        return rows

    @staticmethod
    def _write_curve(ctx: RunContext, stem: str, cell: Cell, objective: str, lr: float, tcfg: TrainConfig,
                     run: dict[str, Any]) -> str | None:
        if ctx.out is None:
            return None
        path = ctx.out / "curves" / f"{stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        result = run.get("result")
        path.write_text(json.dumps({
            "mixer": cell.mixer, "objective": objective, "lr": lr, "seq_len": cell.seq_len, "batch": cell.batch,
            "tokens_per_step": cell.seq_len * cell.batch, "train_config": asdict(tcfg),
            "diverged": run["diverged"], "error": run.get("error"),
            "train": result.curve if result else [], "evals": result.evals if result else [],
            "final": run.get("final")}, indent=1))
        return str(Path(path).relative_to(ctx.out))
