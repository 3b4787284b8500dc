"""A small, seeded training loop shared by the quality benchmarks (perplexity, recall).

Same optimiser, schedule and budget for every mixer: AdamW, linear warm-up then cosine decay, gradient clipping,
fp32 master weights. The model maps (B, T) int64 tokens to (B, T, V) logits; the loss is cross-entropy over the
positions where ``targets != ignore_index``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


@dataclass
class TrainConfig:
    steps: int = 200  # optimiser steps: the token budget is steps x batch x seq_len
    lr: float = 3e-3  # peak learning rate
    warmup_steps: int = 20  # linear warm-up from 0 to lr
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.1  # AdamW, on matrices only (not norms, biases, embeddings' rows are matrices too)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # global norm
    eval_every: int = 50  # steps between evaluations (0: only at the end)
    seed: int = 0


@dataclass
class TrainResult:
    steps: int
    tokens: int  # tokens seen (input positions) during training
    seconds: float
    tokens_per_s: float
    curve: list[dict] = field(default_factory=list)  # {"step", "train_loss", "lr"} and eval entries
    evals: list[dict] = field(default_factory=list)  # {"step", **eval_fn(model)}
    stopped_early: bool = False


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats over positions whose target is not IGNORE_INDEX."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def train(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], cfg: TrainConfig,
          eval_fn: Callable[[nn.Module], dict] | None = None,
          stop_fn: Callable[[dict], bool] | None = None,
          loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> TrainResult:
    """Train ``model`` on (inputs, targets) batches for cfg.steps steps.

    ``loss_fn(model, inputs, targets) -> loss`` replaces the default ``lm_loss(model(inputs), targets)`` (the recall
    tasks compute logits only at their few labelled positions).

    ``eval_fn(model) -> dict`` runs every ``eval_every`` steps and at the end (in eval mode, no grad);
    ``stop_fn(eval_dict) -> bool`` may stop early (e.g. at 99% accuracy).
    """
    torch.manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    result = TrainResult(steps=0, tokens=0, seconds=0.0, tokens_per_s=0.0)
    train_seconds = 0.0

    def evaluate(step: int) -> dict:
        model.eval()
        with torch.no_grad():
            metrics = eval_fn(model) if eval_fn else {}
        model.train()
        entry = {"step": step, **metrics}
        result.evals.append(entry)
        return entry

    model.train()
    for step in range(cfg.steps):
        inputs, targets = next(batches)
        start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = loss_fn(model, inputs, targets) if loss_fn else lm_loss(model(inputs), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        train_seconds += time.perf_counter() - start
        result.steps = step + 1
        result.tokens += inputs.numel()
        loss_value = float(loss.detach())
        result.curve.append({"step": step + 1, "train_loss": loss_value, "lr": lr_at(step, cfg)})
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss is {loss_value} at step {step + 1}")
        if eval_fn and cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            entry = evaluate(step + 1)
            if stop_fn and stop_fn(entry):
                result.stopped_early = True
                break
    if eval_fn and (not result.evals or result.evals[-1]["step"] != result.steps):
        evaluate(result.steps)
    result.seconds = train_seconds
    result.tokens_per_s = result.tokens / train_seconds if train_seconds else 0.0
    return result


# ---- the learning-rate sweep shared by the quality benchmarks ----------------------------------------------------

@dataclass
class SweepRun:
    """One training of a learning-rate sweep: its lr, its training seed, what ``train_one`` returned (None if it
    diverged, with the error) and whether its lr is the sweep's best (every seed run at the best lr is ``best``)."""
    lr: float
    seed: int  # the training seed (initial weights, batch order); the data and evaluation sets do not change
    outcome: object | None = None
    error: str | None = None  # set when the loss became non-finite (FloatingPointError from ``train``)
    best: bool = False
    role: str = "sweep"  # "sweep": one of the lrs tried at the first seed; "seed": a further seed at the best lr

    @property
    def diverged(self) -> bool:
        return self.error is not None


def lr_sweep(train_one: Callable[[float, int], object], lrs: list[float], seed: int, seeds: int,
             badness: Callable[[object], tuple | float]) -> list[SweepRun]:
    """Zoology's protocol with seeds: train once per learning rate of ``lrs`` (ascending) at ``seed``, pick the best
    by the validation figure ``badness(outcome)`` (lower is better; a tie keeps the smaller lr; a diverged lr is
    never best), then train ``seeds - 1`` further seeds (``seed + 1``, ``seed + 2``, ...) at the best lr.

    The best lr's sweep run counts as its first seed, so ``seeds`` = 2 costs len(lrs) + 1 trainings. Its figure is
    the one the lr was chosen on (optimistically biased, by the luck of that seed); the further seeds are not, and
    the spread over all of them shows how much a seed moves the figure. Raises FloatingPointError when every lr
    diverged. ``train_one(lr, seed)`` returns any outcome; it raises FloatingPointError when the run diverges."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")

    def attempt(lr: float, s: int, role: str) -> SweepRun:
        try:
            return SweepRun(lr=lr, seed=s, outcome=train_one(lr, s), role=role)
        except FloatingPointError as err:
            return SweepRun(lr=lr, seed=s, error=str(err), role=role)

    runs = [attempt(lr, seed, "sweep") for lr in sorted(lrs)]
    finished = [r for r in runs if not r.diverged]
    if not finished:
        raise FloatingPointError(f"training diverged at every learning rate {sorted(lrs)}: {runs[-1].error}")
    best = finished[0]
    for r in finished[1:]:
        if badness(r.outcome) < badness(best.outcome):  # strict: a tie keeps the smaller lr
            best = r
    runs += [attempt(best.lr, seed + k, "seed") for k in range(1, seeds)]
    for r in runs:
        r.best = r.lr == best.lr
    return runs
