"""Mixers and models from other installed packages, registered through entry points.

A package declares, in its pyproject.toml::

    [project.entry-points."transformer_bench.mixers"]
    my_attn = "my_package.mixers"          # a module whose import registers mixers (@register_mixer)

    [project.entry-points."transformer_bench.models"]
    my_model = "my_package.models"         # a module whose import registers models

``load_plugins`` (run when ``architectures`` is imported) loads every entry point of both groups; the registry then
lists, creates and checks those mixers like ours (``transformer-bench list mixers``, suites, ``check-mixer``).
A plugin that fails to load raises ``PluginError`` naming it: a suite never runs without a mixer it was given.
"""
from __future__ import annotations

from importlib.metadata import entry_points

GROUPS = ("transformer_bench.mixers", "transformer_bench.models")
ORIGIN: dict[str, str] = {}  # registered mixer name -> "<distribution> (<entry point>)" of the plugin that added it


class PluginError(RuntimeError):
    """An entry point of a transformer_bench group could not be loaded."""


def load_plugins() -> None:
    from .registry import MIXERS

    for group in GROUPS:
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            before = set(MIXERS.list())
            try:
                ep.load()
            except Exception as err:  # noqa: BLE001 - re-raised with the plugin's name
                dist = ep.dist.name if ep.dist else "?"
                raise PluginError(f"plugin {ep.name!r} ({ep.value}, from {dist}) in group {group!r} failed to "
                                  f"load: {type(err).__name__}: {err}") from err
            for name in set(MIXERS.list()) - before:
                ORIGIN[name] = f"{ep.dist.name if ep.dist else '?'} ({ep.name})"
