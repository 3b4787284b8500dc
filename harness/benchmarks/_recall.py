"""Shared machinery of the recall benchmarks (``mqar``, ``selective_copy``, ``passkey``): train a small ``DecoderLM``
with the cell's mixer on a synthetic task, once per learning rate of a small sweep, and report test accuracy. By
default the blocks hold the mixer only (``ffn: none``), as Zoology's MQAR models: recall is the mixer's job.

Every mixer gets the same backbone, data, token budget and learning rates (the Zoology protocol: the best of a small
learning-rate sweep is reported, and every lr is recorded). The sweep is ``harness.training.lr_sweep``: every lr at
the cell's seed, then ``seeds - 1`` further training seeds at the best lr (initial weights and batch order change,
the training and test sets do not). Per training, rows carry ``lr``, ``train_seed``, ``sweep_role`` (``sweep`` or
``seed``), the budget (``steps_budget``, ``train_examples``) and ``best`` (True on the rows of the lr with the
highest test accuracy, ties broken by the lower test loss, and on every seed run at that lr):

    accuracy          fraction of labelled positions predicted right (the task's main metric)
    example_accuracy  fraction of test examples with every labelled position right
    test_loss         cross-entropy (nats) at labelled positions
    train_steps, train_tokens, train_seconds, train_tokens_per_s, stopped_early (1 if the early-stop accuracy was reached)
    diverged          1, instead of the rows above, for an lr whose training loss became non-finite (never best)

and once per cell (``lr`` = None): ``state_bytes`` (one layer's decode state after seq_len tokens, batch 1, from
the mixer's ``state_bytes``; absent for mixers that do not decode), ``model_state_bytes`` (all layers), ``params``.

The learning curves of every training are written to ``OUT/curves/<cell>.json`` (keyed by lr, and
``<lr>/seed=<k>`` for the further seeds).

``params.profiles`` overrides these parameters per device type (e.g. Zoology's budget on ``cuda``), the way a
suite's ``profiles`` override its sweep.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections import OrderedDict
from typing import Any, Callable, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

import architectures
from architectures.backbone import DecoderLM, LMConfig

from ..device import device_info
from ..partial import TrainingCache, code_hash, encode_dataclasses, safe_name
from ..tasks import TaskData, epoch_batches, evaluate_accuracy, labeled_loss
from ..training import TrainConfig, TrainResult, lr_sweep, train
from . import Benchmark, Cell, RunContext, SkipCell, metric


def _float_or_same(x: Any) -> Any:
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return x
    return x


class RecallParams(BaseModel):
    """Training budget and protocol, the same for every mixer."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    lrs: list[PositiveFloat] = Field(default=[1e-3, 3e-3], min_length=1)  # the sweep; the best is reported
    seeds: PositiveInt = 1  # trainings at the best lr (its sweep run is the first): the spread over seeds
    train_examples: PositiveInt = 20_000  # a fixed training set, seen for `epochs` passes
    test_examples: PositiveInt = 1_000  # a disjoint test set (other seed, identical examples removed)
    epochs: PositiveFloat = 1.0  # steps = ceil(epochs * train_examples / batch)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.1, ge=0)
    eval_every: PositiveInt = 50  # steps between test evaluations (early stop is checked there)
    early_stop_accuracy: float | None = Field(default=0.99, gt=0, le=1)  # stop an lr's run once reached
    n_layers: PositiveInt = 2
    ffn: Literal["none", "swiglu", "gelu"] = "none"  # mixer-only blocks, as Zoology's MQAR models (no MLP)
    # mixer label -> {seq_len: {hparam: value}}: hyperparameters set per length, on top of the suite's, e.g. a
    # sliding window smaller than every sequence ({sliding_window: {64: {window: 16}, 128: {window: 32}}}); the
    # cell's rows record the hparams it ran with
    hparams_by_length: dict[str, dict[int, dict[str, Any]]] = Field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)  # device type -> overrides of these fields

    @field_validator("lrs", mode="before")
    @classmethod
    def _yaml_exponents(cls, v):
        """YAML 1.1 reads `1e-3` (no dot) as a string; accept it as the number it means."""
        if isinstance(v, list):
            return [_float_or_same(x) for x in v]
        return v

    @model_validator(mode="after")
    def _profiles_are_valid(self):
        for device, override in self.profiles.items():
            if device not in ("cpu", "cuda"):
                raise ValueError(f"profiles: unknown device type {device!r}; expected cpu or cuda")
            if "profiles" in override:
                raise ValueError("profiles cannot nest")
            type(self).model_validate({**self.model_dump(exclude={"profiles"}), **override})
        return self

    def for_device(self, device_type: str):
        override = self.profiles.get(device_type)
        if not override:
            return self
        return type(self).model_validate({**self.model_dump(exclude={"profiles"}), **override})


class RecallBenchmark(Benchmark):
    """Subclasses set ``Params`` and implement ``vocab_size``, ``make_data`` (and may add eval sets)."""
    modes = ("train",)
    Params: ClassVar[type[RecallParams]] = RecallParams
    cache_size: ClassVar[int] = 2  # data sets kept between cells (cells of one shape run mixer after mixer)

    def __init__(self, entry, suite, device):
        super().__init__(entry, suite, device)
        self.params = self.params.for_device(device.type)
        self._data: OrderedDict[tuple, Any] = OrderedDict()

    def cells(self, mixers):
        """The kind's grid, with ``hparams_by_length`` applied to the cells of the mixers it names."""
        by_length = self.params.hparams_by_length
        labels = {m if isinstance(m, str) else (m.label or m.name) for m in self.suite.mixers}
        unknown = sorted(set(by_length) - labels - set(architectures.list_mixers()) - {m.label for m in mixers})
        if unknown:
            raise ValueError(f"{self.entry.label}: params.hparams_by_length names mixers that are neither registered "
                             f"nor labels of the suite: {unknown}")
        for cell in self.grid(mixers):
            override = by_length.get(cell.mixer, {}).get(cell.seq_len)
            yield dataclasses.replace(cell, hparams={**cell.hparams, **override}) if override else cell

    def grid(self, mixers):
        """The cells before ``hparams_by_length`` (default: the sweep's grid; mqar adds its pair counts)."""
        return super().cells(mixers)

    # ---- what a task provides ------------------------------------------------------------------------------------
    def vocab_size(self, cell: Cell) -> int:
        raise NotImplementedError

    def make_data(self, cell: Cell) -> tuple[TaskData, TaskData]:
        """(train, test) for the cell, disjoint."""
        raise NotImplementedError

    def data_key(self, cell: Cell) -> tuple:
        return (cell.seq_len, cell.seed)

    def extra_evals(self, cell: Cell) -> dict[Any, TaskData]:
        """Further evaluation sets after training (e.g. longer lengths), keyed by a label stored in the rows."""
        return {}

    extra_eval_key: ClassVar[str] = "eval"  # the row key that holds an extra evaluation set's label

    def main_eval_tag(self, cell: Cell) -> dict[str, Any]:
        """Extra keys of the rows of the main test set (e.g. its length, beside the extra sets' lengths)."""
        return {}

    # ---- the report -------------------------------------------------------------------------------------------------
    report_keys: ClassVar[list[str]] = ["seq_len", "d_model"]  # the columns of the accuracy table's configurations
    report_note: ClassVar[str] = ""  # a sentence added to the section's explanation

    @classmethod
    def report_plots(cls, run, entry) -> list:
        """The section's plots (``_recall_report.AccuracyPlot``); default: accuracy against length per width."""
        from ._recall_report import AccuracyPlot, best_accuracy

        best = best_accuracy(run.rows(entry.label))
        if best.empty:
            return []
        return [AccuracyPlot(best, "seq_len", ["d_model"], "length", f"{entry.label}: accuracy vs sequence length")]

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        from ._recall_report import section

        return section(run, entry, cls.report_keys, cls.report_plots(run, entry), cls.report_note)

    # ---- the protocol ----------------------------------------------------------------------------------------------
    def data(self, cell: Cell) -> tuple[TaskData, TaskData]:
        key = self.data_key(cell)
        if key not in self._data:
            self._data[key] = self.make_data(cell)
            while len(self._data) > self.cache_size:
                self._data.popitem(last=False)
        self._data.move_to_end(key)
        return self._data[key]

    def steps(self, cell: Cell) -> int:
        p = self.params
        return max(1, math.ceil(p.epochs * p.train_examples / cell.batch))

    def build_model(self, cell: Cell, seed: int | None = None) -> DecoderLM:
        torch.manual_seed(cell.seed if seed is None else seed)  # the same initial weights for every lr of a seed
        cfg = LMConfig(mixer=cell.mixer_name, mixer_hparams=dict(cell.hparams), impl=cell.impl,
                       vocab_size=self.vocab_size(cell), d_model=cell.d_model, n_layers=self.params.n_layers,
                       n_heads=cell.n_heads, ffn=self.params.ffn)
        return DecoderLM(cfg)

    def fingerprint(self, cell: Cell) -> dict[str, Any]:
        """What a training of this cell depends on (``harness.partial``: a kept training is reused only when equal)."""
        return {"cell": cell.fields(), "kind": self.name, "params": self.params.model_dump(mode="json"),
                "code": code_hash(architectures.get_mixer(cell.mixer_name), type(self))}

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        cls = architectures.get_mixer(cell.mixer_name)
        if "causal" not in cls.spec.modes:
            raise SkipCell(f"{cell.mixer_name} is not causal (modes {sorted(cls.spec.modes)}): the recall tasks are "
                           "autoregressive")
        dtype = getattr(torch, cell.dtype)
        reason = cls.unavailable_reason(cell.impl, ctx.device, dtype)
        if reason:
            raise SkipCell(reason)
        p = self.params
        train_data, test_data = self.data(cell)
        extra = self.extra_evals(cell)
        steps = self.steps(cell)
        autocast: Callable[[], Any] = (
            (lambda: torch.autocast(ctx.device.type, dtype=dtype)) if dtype != torch.float32
            else contextlib.nullcontext)

        def loss_fn(model, inputs, targets):
            with autocast():
                return labeled_loss(model, inputs, targets)

        def eval_fn(model):
            with autocast():
                return evaluate_accuracy(model, test_data, device=ctx.device)

        stop = (lambda e: e["accuracy"] >= p.early_stop_accuracy) if p.early_stop_accuracy else None
        curves: dict[str, Any] = {}

        def curve_key(lr: float, seed: int) -> str:
            return str(lr) if seed == cell.seed else f"{lr}/seed={seed}"

        def train_one(lr: float, seed: int) -> dict[str, Any]:
            """One training at (lr, seed): seed sets the initial weights and the batch order, not the data."""
            model = self.build_model(cell, seed).to(ctx.device)
            cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=int(p.warmup_fraction * steps),
                              weight_decay=p.weight_decay, eval_every=p.eval_every, seed=seed)
            result = train(model, epoch_batches(train_data, cell.batch, seed, ctx.device), cfg,
                           eval_fn=eval_fn, stop_fn=stop, loss_fn=loss_fn)
            extra_results = {}
            for label, data in extra.items():
                with autocast():
                    extra_results[label] = evaluate_accuracy(model, data, device=ctx.device)
            return {"final": result.evals[-1], "result": result, "extra": extra_results}

        # a training finished by an earlier attempt at this cell (cut off later in its sweep) is taken, not redone
        kept = TrainingCache(ctx.out, cell.cell_id, self.fingerprint(cell),
                             device_info(ctx.device)["device_name"]).wrap(
            train_one, encode=encode_dataclasses, decode=lambda o: {**o, "result": TrainResult(**o["result"])})

        def recorded(lr: float, seed: int) -> dict[str, Any]:
            try:
                outcome = kept(lr, seed)
            except FloatingPointError as err:  # recorded, and never a candidate for best
                curves[curve_key(lr, seed)] = {"diverged": str(err)}
                raise
            result = outcome["result"]
            curves[curve_key(lr, seed)] = {"evals": result.evals, "curve": result.curve, "extra": outcome["extra"]}
            return outcome

        runs = lr_sweep(recorded, p.lrs, cell.seed, p.seeds,
                        badness=lambda r: (-r["final"]["accuracy"], r["final"]["loss"]))

        rows: list[dict[str, Any]] = []
        for run in runs:
            reused = (run.outcome or {}).get("reused")
            tag = {"lr": run.lr, "best": run.best, "train_seed": run.seed, "sweep_role": run.role,
                   "steps_budget": steps, "train_examples": p.train_examples, "reused_training": bool(reused),
                   **(reused or {})}
            if run.diverged:
                rows.append(metric("diverged", 1, "bool", **tag, diverged_error=run.error))
                continue
            final, result = run.outcome["final"], run.outcome["result"]
            main = {**tag, **self.main_eval_tag(cell)}
            rows += [metric("accuracy", final["accuracy"], "fraction", **main),
                     metric("example_accuracy", final["example_accuracy"], "fraction", **main),
                     metric("test_loss", final["loss"], "nats", **main),
                     metric("train_steps", result.steps, "steps", **tag),
                     metric("train_tokens", result.tokens, "tokens", **tag),
                     metric("train_seconds", result.seconds, "s", **tag),
                     metric("train_tokens_per_s", result.tokens_per_s, "tok/s", **tag),
                     metric("stopped_early", int(result.stopped_early), "bool", **tag)]
            for label, res in run.outcome["extra"].items():
                extra_tag = {**tag, self.extra_eval_key: label}
                rows += [metric("accuracy", res["accuracy"], "fraction", **extra_tag),
                         metric("example_accuracy", res["example_accuracy"], "fraction", **extra_tag),
                         metric("test_loss", res["loss"], "nats", **extra_tag)]
        model = self.build_model(cell)
        rows.append(metric("params", model.num_params(), "count", lr=None, best=None))
        try:
            per_layer = model.blocks[0].mixer.state_bytes(1, cell.seq_len, dtype)
        except NotImplementedError:
            per_layer = None
        if per_layer is not None:
            rows += [metric("state_bytes", per_layer, "B", lr=None, best=None, n_layers=p.n_layers),
                     metric("model_state_bytes", per_layer * p.n_layers, "B", lr=None, best=None)]
        if ctx.out is not None:
            (ctx.out / "curves").mkdir(parents=True, exist_ok=True)
            path = ctx.out / "curves" / f"{safe_name(cell.cell_id)}.json"
            path.write_text(json.dumps({"cell_id": cell.cell_id, "steps_budget": steps, "lrs": curves}))
        return rows
