"""The model registry: whole-model presets (published full-size configs plus a CPU-sized ``tiny`` flavour) by name.

A preset is data. It is registered by a decorator on a zero-argument function that returns it, placed in its family's
file (``architectures/models/<family>.py``)::

    @register_model("llama2-7b")
    def llama2_7b() -> ModelPreset:
        return ModelPreset(family="LLaMA", paper=..., kind="decoder", stack=DecoderLM, full=..., tiny=..., published=...)

``build_model(name, flavour, device, dtype)`` builds either flavour from the same code; on ``device="meta"`` no memory
is allocated for weights, so a 671B model builds in seconds and its parameter count is exact.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from ..registry import Registry
from ..spec import Paper

KINDS = ("decoder", "encoder", "encoder-decoder", "vision")
FLAVOURS = ("tiny", "full")


@dataclass(frozen=True)
class ModelPreset:
    family: str  # e.g. "LLaMA", "Mixtral": what `list models` groups by
    paper: Paper  # the paper the full-size values come from
    kind: str  # one of KINDS: which forward contract the built module follows
    stack: Callable[[Any], nn.Module]  # the model class; called with `full` or `tiny`
    full: Any  # the published full-size config (a stack's config dataclass)
    tiny: Any  # same code, CPU-sized: a few layers, d_model 64-256
    # Published figures with their sources, e.g. {"params": 6.74e9}; "active_params" for MoE models.
    published: Mapping[str, float] = field(default_factory=dict)
    # config -> transformers.PretrainedConfig of the same model (transformers imported lazily inside), or None
    hf_config: Callable[[Any], Any] | None = None
    notes: str = ""  # conventions and known differences from the published model
    name: str = ""  # set by @register_model

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"preset kind must be one of {KINDS}, got {self.kind!r}")
        object.__setattr__(self, "published", MappingProxyType(dict(self.published)))

    def config(self, flavour: str = "tiny") -> Any:
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
        return self.full if flavour == "full" else self.tiny


MODELS: Registry[ModelPreset] = Registry("model")


def register_model(name: str) -> Callable[[Callable[[], ModelPreset]], Callable[[], ModelPreset]]:
    """Decorator on a function returning the preset: ``@register_model("mixtral-8x7b")``. The function is called
    once, at import, and its preset registered under ``name`` (a duplicate name raises)."""

    def wrap(fn: Callable[[], ModelPreset]) -> Callable[[], ModelPreset]:
        preset = fn()
        if not isinstance(preset, ModelPreset):
            raise TypeError(f"@register_model({name!r}) must decorate a function returning a ModelPreset, "
                            f"got {type(preset).__name__}")
        MODELS.register(name, dataclasses.replace(preset, name=name))
        return fn

    return wrap


def get_model(name: str) -> ModelPreset:
    return MODELS.get(name)


def list_models(pattern: str | Iterable[str] = "*") -> list[str]:
    return MODELS.list(pattern)


def build_model(name: str | ModelPreset, flavour: str = "tiny", device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, config: Any = None) -> nn.Module:
    """Build a preset's model. ``device="meta"``: parameters without storage (exact counts, FLOPs by tracing).
    ``config`` replaces the flavour's config (e.g. one read from a Hugging Face config.json)."""
    preset = get_model(name) if isinstance(name, str) else name
    cfg = preset.config(flavour) if config is None else config
    with torch.device(device):
        model = preset.stack(cfg)
    return model.to(dtype)
