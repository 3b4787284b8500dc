"""Whole-model presets: the model registry, the building blocks (layer patterns, FFNs, MoE, norms, positions, the
decoder stack) and one file per family, each registering its presets with ``@register_model``. Importing this package
imports every module in it (files starting with "_" are helpers), so adding a family file is all it takes."""
import importlib
import pkgutil

from .registry import MODELS, ModelPreset, build_model, get_model, list_models, register_model

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["MODELS", "ModelPreset", "build_model", "get_model", "list_models", "register_model"]
