"""The ``Mixer`` contract: one sequence-mixing layer (an attention method) with its own projections.

    forward(x: (B, T, D)) -> (B, T, D)              the parallel form (training / prefill)
    prefill(x: (B, T, D)) -> (y, state)             forward, also returning the decode state after T tokens
    init_state(batch) -> state                       the empty decode state
    step(x_t: (B, D), state) -> (y_t: (B, D), state) one decoding step; the state is returned, never kept inside
    state_bytes(batch, seq_len, dtype) -> int        analytic size of the state after seq_len tokens
    reference(x) -> y                                an fp32 loop that reads like the paper (the tests' oracle)

A state is a dict of tensors (plus plain ints such as a position); ``measured_state_bytes`` counts the bytes of the
distinct storages it holds, which the tests and the decode benchmark check against ``state_bytes``.

Hyperparameters are the keyword arguments of a subclass's ``__init__`` after ``causal`` and ``impl``; each is kept as
an attribute of the same name (so ``hparams()`` can report it) and its default equals ``spec.default_hparams``.
"""
from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .spec import MixerSpec

State = dict[str, Any]

# Constructor arguments that are not hyperparameters of the method.
STRUCTURAL_ARGS = ("self", "d_model", "n_heads", "causal", "impl")


class Mixer(nn.Module):
    name: ClassVar[str]
    spec: ClassVar[MixerSpec]

    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None):
        super().__init__()
        if d_model <= 0 or n_heads <= 0:
            raise ValueError(f"d_model and n_heads must be positive, got {d_model}, {n_heads}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        mode = "causal" if causal else "bidirectional"
        if mode not in self.spec.modes:
            raise ValueError(f"{self.name} does not support {mode} mode (modes: {sorted(self.spec.modes)})")
        impl = impl or self.spec.default_impl
        if impl not in self.spec.impls:
            raise ValueError(f"{self.name} has no impl {impl!r}; available: {list(self.spec.impls)}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.causal, self.impl = causal, impl

    def reset_special_parameters(self) -> None:
        """Re-apply the initialisations the method's paper prescribes for parameters that live in ordinary layers
        (Mamba's dt projection), which a model's generic init (GPT-2's N(0, 0.02) and zero biases on every Linear,
        ``DecoderLM``) overwrites; the model calls it after that init, as Hugging Face's Mamba re-inits its dt_proj.
        Parameters of their own (``A_log``, ``dt_bias``) are never touched by a generic init. Default: none."""

    # ---- shared plumbing of the head projections ------------------------------------------------------------------
    def project_heads(self, x: torch.Tensor, *linears: nn.Linear, fp32: bool = False) -> tuple[torch.Tensor, ...]:
        """x: (B, T, D) -> one (B, T, H, Dh) tensor per projection; with fp32, inputs and weights in fp32 (the
        references)."""
        shape = (*x.shape[:-1], self.n_heads, -1)  # (B, T, H*Dh) -> (B, T, H, Dh)
        if fp32:
            x = x.float()
            return tuple(F.linear(x, m.weight.float()).view(shape) for m in linears)
        return tuple(m(x).view(shape) for m in linears)

    def merge_heads(self, o: torch.Tensor, wo: nn.Linear, fp32: bool = False) -> torch.Tensor:
        """o: (..., H, Dh) -> the output projection of the concatenated heads, (..., D)."""
        o = o.flatten(-2)  # (..., H, Dh) -> (..., H*Dh)
        return F.linear(o, wo.weight.float()) if fp32 else wo(o)

    # ---- the contract -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        raise NotImplementedError(f"{self.name} does not decode")

    def init_state(self, batch: int) -> State:
        raise NotImplementedError(f"{self.name} does not decode")

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError(f"{self.name} does not decode")

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        raise NotImplementedError(f"{self.name} does not decode")

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ---- shared helpers -----------------------------------------------------------------------------------------
    @classmethod
    def hparam_names(cls) -> list[str]:
        params = inspect.signature(cls.__init__).parameters
        return [p for p in params if p not in STRUCTURAL_ARGS and params[p].kind is not inspect.Parameter.VAR_KEYWORD]

    @classmethod
    def signature_defaults(cls) -> dict[str, Any]:
        params = inspect.signature(cls.__init__).parameters
        return {p: params[p].default for p in cls.hparam_names()}

    def hparams(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.hparam_names()}

    @classmethod
    def unavailable_reason(cls, impl: str, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why ``impl`` cannot run on this device/dtype (None if it can). Override for optional backends."""
        return None

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def measured_state_bytes(state: Any) -> int:
    """Bytes of the distinct tensor storages reachable from a state (dicts, lists, tuples of tensors)."""
    seen: dict[int, int] = {}

    def walk(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            seen[storage.data_ptr() or id(storage)] = storage.nbytes()
        elif isinstance(obj, dict):
            for value in obj.values():
                walk(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value)

    walk(state)
    return sum(seen.values())
