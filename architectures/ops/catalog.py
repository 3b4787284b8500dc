"""A catalogue of operator implementations, for side-by-side speed benchmarks (kind ``op_speed``).

An *op* is named after the mixer it serves ("linear", "gla", ...) and comes with ``make_inputs``, which builds its
arguments for a (B, T, H, D) problem. Each *implementation* of the op is a function of those inputs that returns the
output tensor: ours (the fast form, the naive loop) and other projects' PyTorch references, which are imported
lazily inside their function and declare the modules they need, so that a missing package becomes a skipped cell.

    @register_op("linear")
    def make_linear_inputs(B, T, H, D, dtype, device, generator) -> dict: ...

    @register_op_impl("linear", "chunk", source="ours")
    def _(inputs): return chunk_linear_attention(**inputs)[0]

Importing ``architectures.ops`` modules registers their entries; ``load_all()`` imports every op module.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..registry import Registry

InputMaker = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class OpImpl:
    op: str
    name: str  # e.g. "chunk", "naive", "fla.naive_recurrent_gla"
    fn: Callable[[dict[str, Any]], torch.Tensor]
    source: str  # "ours" or the other project ("fla", "transformers", ...)
    requires: tuple[str, ...] = ()  # modules that must be importable
    notes: str = ""

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m.split(".")[0]) is None]


@dataclass
class Op:
    name: str
    make_inputs: InputMaker
    fast: str = "chunk"  # the name of our fast form: what `op_speed` divides by and a scaling `scope: operator` runs
    impls: dict[str, OpImpl] = field(default_factory=dict)


OPS: Registry[Op] = Registry("op")


def register_op(name: str, *, fast: str = "chunk") -> Callable[[InputMaker], InputMaker]:
    """Decorate ``make_inputs(B, T, H, D, dtype, device, generator) -> dict of keyword arguments``; ``fast`` names
    the implementation that is our fast form ("chunk" for chunkwise-parallel ops, "blocked" for block-local ones)."""

    def wrap(make_inputs: InputMaker) -> InputMaker:
        OPS.register(name, Op(name, make_inputs, fast))
        return make_inputs

    return wrap


def register_op_impl(op: str, name: str, *, source: str, requires: tuple[str, ...] = (), notes: str = ""):
    def wrap(fn: Callable[[dict[str, Any]], torch.Tensor]):
        entry = OPS.get(op)
        if name in entry.impls:
            raise ValueError(f"op {op!r} already has an implementation {name!r}")
        entry.impls[name] = OpImpl(op, name, fn, source, tuple(requires), notes)
        return fn

    return wrap


def load_all() -> None:
    """Import every module of architectures.ops so that all ops and implementations are registered."""
    import architectures.ops as pkg

    for module in sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name != "catalog"):
        importlib.import_module(f"{pkg.__name__}.{module}")
