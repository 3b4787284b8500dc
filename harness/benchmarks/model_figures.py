"""``model_figures``: the analytic figures of whole models (``architectures.models.figures``), read off the real module
built on the meta device: no weights in memory, seconds even for 671B.

Params: ``models`` (globs over the model registry), ``flavour`` (``full``: the published sizes), ``context`` (the
context of the FLOP counts), ``contexts`` (where the decode-state bytes are given), and ``variants``: named changes of
a preset's config (``{label: {model: NAME, config: {field: value}, note: ...}}``), e.g. Kimi Linear with MLA in every
layer, the baseline of its "KV cache 25%" claim. A cell is one model or variant (its label in the ``mixer`` column;
``model``, ``family``, ``kind`` and ``variant_of`` columns beside). Rows:

    params  active_params  published_params  published_active_params  (count)
    prefill_flops_per_token  decode_flops_per_token  (FLOP, at ``context``)
    state_bytes_per_token, state_bytes_fixed (B; column ``cache_dtype``)   state_bytes (B; ``context``, ``cache_dtype``)
    weight_bytes (B; ``weight_dtype``)  decode_bytes_per_token (B; bf16 weights and cache at ``context``)
    figures_s, figures_cpu_s (s: build + figures, wall clock and this process's CPU time)
"""
from __future__ import annotations

import dataclasses
import fnmatch
import time
from typing import Any, Iterator

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from ..config import ResolvedMixer
from . import Benchmark, Cell, RunContext, metric, register_benchmark


def _check_model_globs(globs: list[str]) -> list[str]:
    import architectures.models as M
    from architectures.registry import UnknownNameError

    for g in globs:
        if not M.list_models(g):
            raise ValueError(f"{g!r} matches no model: " + str(UnknownNameError("model", g, M.list_models())))
    return globs


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    model: str  # the preset it changes
    config: dict[str, Any] = Field(default_factory=dict)  # fields of the preset's config replaced (lists -> tuples)
    note: str = ""  # what the variant is for (shown in the report)

    @field_validator("model")
    @classmethod
    def _registered(cls, v: str) -> str:
        import architectures.models as M

        if v not in M.MODELS:
            from architectures.registry import UnknownNameError

            raise ValueError(str(UnknownNameError("model", v, M.list_models())))  # "did you mean", the list
        return v

    @model_validator(mode="after")
    def _fields_exist(self) -> "Variant":
        import architectures.models as M

        cfg = M.get_model(self.model).full
        known = {f.name for f in dataclasses.fields(cfg)}
        unknown = sorted(set(self.config) - known)
        if unknown:
            raise ValueError(f"{type(cfg).__name__} of {self.model!r} has no field(s) {unknown}; "
                             f"it has {sorted(known)}")
        return self


class ModelSelection(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    models: list[str] = Field(default=["*"], min_length=1)  # globs over the model registry
    variants: dict[str, Variant] = Field(default_factory=dict)  # extra cells: presets with config changes

    @field_validator("models")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _check_model_globs(v)


class FiguresParams(ModelSelection):
    flavour: str = Field(default="full", pattern="^(full|tiny)$")
    context: PositiveInt = 4096  # FLOPs per token counted at this context (prefill of `context` tokens, one step after)
    contexts: list[PositiveInt] = Field(default=[4096, 32768, 131072, 1048576], min_length=1)  # state bytes at these


def model_cells(bench: Benchmark, mode: str, seq_lens: list[int]) -> Iterator[Cell]:
    """One cell per (model or variant, seq_len): label in ``mixer``, the registry name in ``mixer_name``."""
    import architectures.models as M

    p: ModelSelection = bench.params
    names = [n for n in M.list_models() if any(fnmatch.fnmatchcase(n, g) for g in p.models)]
    items = [(n, n, {}) for n in names] + [(label, v.model, dict(v.config)) for label, v in p.variants.items()]
    flavour = getattr(p, "flavour", "tiny")
    for label, name, changes in items:
        cfg = M.get_model(name).config(flavour)
        for n in seq_lens:
            yield Cell(bench.entry.label, bench.name, label, name, "-", mode, n, 1, getattr(cfg, "d_model", 0),
                       getattr(cfg, "n_heads", 0), "float32", bench.suite.seed,
                       {"flavour": flavour, "config": changes})


def build_cell_model(cell: Cell, device: str | torch.device):
    """(preset, model, extras) of a model cell: the preset's flavour with the variant's config changes."""
    import architectures.models as M

    preset = M.get_model(cell.mixer_name)
    cfg = preset.config(cell.hparams["flavour"])
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in cell.hparams["config"].items()}
    if changes:
        cfg = dataclasses.replace(cfg, **changes)
    model = M.build_model(preset, cell.hparams["flavour"], device=device, config=cfg)
    extras = {"model": preset.name, "family": preset.family, "model_kind": preset.kind,
              "variant_of": preset.name if changes else None, "flavour": cell.hparams["flavour"]}
    return preset, model, extras


@register_benchmark("model_figures")
class ModelFigures(Benchmark):
    modes = ("analytic",)
    Params = FiguresParams
    description = "whole-model figures on the meta device: parameters, active parameters, FLOPs/token, state bytes"

    def cells(self, mixers: list[ResolvedMixer]) -> Iterator[Cell]:
        return model_cells(self, "analytic", [self.params.context])

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        from architectures.models.figures import BITS, decode_bytes_per_token, model_figures

        p: FiguresParams = self.params
        start, cpu_start = time.perf_counter(), time.process_time()
        preset, model, ex = build_cell_model(cell, "meta")
        fig = model_figures(model, preset.kind, context=p.context, contexts=tuple(p.contexts))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        pub = {} if ex["variant_of"] else dict(preset.published)
        rows = [metric("params", fig.params, "count", **ex), metric("active_params", fig.active_params, "count", **ex),
                metric("prefill_flops_per_token", fig.prefill_flops_per_token, "FLOP", **ex),
                metric("figures_s", seconds, "s", **ex), metric("figures_cpu_s", cpu_seconds, "s", **ex),
                metric("flops_context", fig.context, "tokens", **ex)]
        rows += [metric(f"published_{k}", v, "count", **ex) for k, v in pub.items() if k in ("params", "active_params")]
        rows += [metric("weight_bytes", fig.weight_bytes[d], "B", weight_dtype=d, **ex) for d in BITS]
        if fig.state_bytes is None:
            return rows
        rows.append(metric("decode_flops_per_token", fig.decode_flops_per_token, "FLOP", **ex))
        rows.append(metric("measured_state_bytes", fig.measured_state_bytes, "B", context=p.context, **ex))
        for d in BITS:
            rows.append(metric("state_bytes_per_token", fig.state_bytes_per_token[d], "B", cache_dtype=d, **ex))
            rows.append(metric("state_bytes_fixed", fig.state_bytes_fixed[d], "B", cache_dtype=d, **ex))
            rows += [metric("state_bytes", fig.state_bytes[d][str(n)], "B", context=n, cache_dtype=d, **ex)
                     for n in p.contexts]
        rows += [metric("decode_bytes_per_token", decode_bytes_per_token(fig, n, "bf16"), "B", context=n,
                        cache_dtype="bf16", **ex) for n in p.contexts]
        return rows

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        from ..model_report import figures_section

        return figures_section(run, entry)
