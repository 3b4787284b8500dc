"""``MixerSpec``: what a mixer is and what the guide claims about it, as data next to its class.

The claimed exponents are the powers of n in the guide's complexity cells (``O(n^2 d)`` -> 2, ``O(n log n)`` -> 1,
which the scaling report compares with a tolerance that the suite states). ``None`` means the guide makes no claim.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

MODES = ("causal", "bidirectional", "decode")
DTYPES = ("float32", "bfloat16", "float16", "float64")


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv: str  # arXiv id, e.g. "2205.14135"
    year: int

    def __str__(self) -> str:
        return f"{self.title} (arXiv:{self.arxiv}, {self.year})"


@dataclass(frozen=True)
class ReferenceConfig:
    """A published model's sizes for a mixer, to evaluate its size formulas (``state_bytes``) at real scale.
    ``head_dim`` is the head size of the multi-head attention it is compared with (n_heads heads of head_dim)."""
    source: str
    d_model: int
    n_heads: int
    head_dim: int
    hparams: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "d_model": self.d_model, "n_heads": self.n_heads, "head_dim": self.head_dim,
                "hparams": dict(self.hparams)}


@dataclass(frozen=True)
class MixerSpec:
    family: str  # e.g. "softmax attention", "sparse attention", "linear attention", "state space"
    paper: Paper
    # The guide's cells as written (Master Comparison Table where the method is listed there).
    claimed_time: str | None
    claimed_memory: str | None
    # Powers of n read off those cells: time, prefill (forward) memory, decode state. None = no claim.
    time_exponent: float | None
    memory_exponent: float | None
    state_exponent: float | None
    claimed_quality: str | None = None  # the guide's Quality column, e.g. "~98%"
    claim_source: str = "guide 000, Master Comparison Table"
    modes: frozenset[str] = frozenset({"causal", "decode"})
    impls: tuple[str, ...] = ("torch",)  # the first one is the default
    # The floating-point dtypes the mixer runs in (forward and decode, on CPU): tests/test_fidelity.py checks every
    # one of them (finite outputs, decode == forward; causality exact in fp32 and bf16; fp64 gradcheck). Every
    # registered mixer runs all four; a new one that cannot (fp16's range ends at 6.5e4) declares fewer, and says why
    # in its notes.
    dtypes: frozenset[str] = frozenset(DTYPES)
    # How the method knows token order inside a model: "own" (RoPE, relative positions, decays, convolutions,
    # token shift) or "absolute" (nothing but causality: the backbone adds sinusoidal absolute positions, as the
    # method's paper's models do). Read by architectures.backbone when LMConfig.pos_emb is "auto".
    positions: str = "own"
    default_hparams: Mapping[str, Any] = field(default_factory=dict)
    # Overrides for tiny shapes (T ~ 60) so that the registry-wide tests exercise the interesting path: several
    # windows, several chunks, shared KV heads. Tests and the smoke suite use them; benchmarks use the defaults.
    test_hparams: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""
    published_configs: Mapping[str, ReferenceConfig] = field(default_factory=dict)  # name -> published sizes

    def __post_init__(self) -> None:
        unknown = set(self.modes) - set(MODES)
        if unknown:
            raise ValueError(f"unknown modes {sorted(unknown)}; known: {MODES}")
        if not self.impls:
            raise ValueError("a mixer needs at least one impl")
        object.__setattr__(self, "modes", frozenset(self.modes))
        unknown = set(self.dtypes) - set(DTYPES)
        if unknown:
            raise ValueError(f"unknown dtypes {sorted(unknown)}; known: {DTYPES}")
        object.__setattr__(self, "dtypes", frozenset(self.dtypes))
        if self.positions not in ("own", "absolute"):
            raise ValueError(f"positions must be 'own' or 'absolute', got {self.positions!r}")
        unknown = set(self.test_hparams) - set(self.default_hparams)
        if unknown:
            raise ValueError(f"test_hparams {sorted(unknown)} are not hyperparameters ({sorted(self.default_hparams)})")
        object.__setattr__(self, "default_hparams", MappingProxyType(dict(self.default_hparams)))
        object.__setattr__(self, "test_hparams", MappingProxyType(dict(self.test_hparams)))
        object.__setattr__(self, "published_configs", MappingProxyType(dict(self.published_configs)))

    @property
    def default_impl(self) -> str:
        return self.impls[0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "paper": str(self.paper),
            "arxiv": self.paper.arxiv,
            "year": self.paper.year,
            "claimed_time": self.claimed_time,
            "claimed_memory": self.claimed_memory,
            "time_exponent": self.time_exponent,
            "memory_exponent": self.memory_exponent,
            "state_exponent": self.state_exponent,
            "claimed_quality": self.claimed_quality,
            "claim_source": self.claim_source,
            "modes": sorted(self.modes),
            "impls": list(self.impls),
            "dtypes": sorted(self.dtypes),
            "positions": self.positions,
            "default_hparams": dict(self.default_hparams),
            "notes": self.notes,
            "published_configs": {name: c.as_dict() for name, c in self.published_configs.items()},
        }
