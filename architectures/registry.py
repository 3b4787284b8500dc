"""Name -> class registries in the style of timm and lm-eval, and the mixer registry built on one.

A thing is registered by a decorator next to its definition; lookup is by exact name only; a duplicate name raises;
an unknown name raises with close matches and the list of what is available; ``list(pattern)`` filters with globs.
The same :class:`Registry` holds mixers here and benchmarks in ``harness.benchmarks``.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Generic, Iterable, TypeVar

from .mixer import Mixer
from .spec import MixerSpec

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An exact-name lookup failed. ``str(err)`` carries suggestions and the available names."""

    def __init__(self, kind: str, name: str, available: Iterable[str]):
        self.kind, self.name, self.available = kind, name, sorted(available)
        close = difflib.get_close_matches(name, self.available, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        self.message = f"unknown {kind} {name!r}; {hint}available: {', '.join(self.available) or '(none)'}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would repr() the message, adding quotes
        return self.message


class DuplicateNameError(ValueError):
    pass


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise DuplicateNameError(f"{self.kind} {name!r} is already registered (by {self._items[name]!r})")
        self._items[name] = obj
        return obj

    def unregister(self, name: str) -> T:
        """Remove an entry. Meant for tests that register throw-away entries."""
        if name not in self._items:
            raise UnknownNameError(self.kind, name, self._items)
        return self._items.pop(name)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def list(self, pattern: str | Iterable[str] = "*") -> list[str]:
        """Sorted names matching a glob (or any of several globs)."""
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        return sorted(n for n in self._items if any(fnmatch.fnmatchcase(n, p) for p in patterns))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def decorator(self, name: str, **attrs) -> Callable[[T], T]:
        """``@registry.decorator(name, spec=...)``: sets ``obj.name`` and the given attributes, then registers."""

        def wrap(obj: T) -> T:
            setattr(obj, "name", name)
            for key, value in attrs.items():
                setattr(obj, key, value)
            return self.register(name, obj)

        return wrap


# ---- mixers ---------------------------------------------------------------------------------------------------
MIXERS: Registry[type[Mixer]] = Registry("mixer")


def register_mixer(name: str, *, spec: MixerSpec) -> Callable[[type[Mixer]], type[Mixer]]:
    """Class decorator: ``@register_mixer("flash", spec=MixerSpec(...))`` next to the class definition."""

    def wrap(cls: type[Mixer]) -> type[Mixer]:
        if not (isinstance(cls, type) and issubclass(cls, Mixer)):
            raise TypeError(f"@register_mixer({name!r}) must decorate a Mixer subclass, got {cls!r}")
        defaults = cls.signature_defaults()
        if defaults != dict(spec.default_hparams):
            raise ValueError(
                f"mixer {name!r}: spec.default_hparams {dict(spec.default_hparams)} differ from the constructor's "
                f"keyword defaults {defaults}"
            )
        return MIXERS.decorator(name, spec=spec)(cls)

    return wrap


def get_mixer(name: str) -> type[Mixer]:
    return MIXERS.get(name)


def list_mixers(pattern: str | Iterable[str] = "*") -> list[str]:
    return MIXERS.list(pattern)


def create_mixer(name: str, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 **hparams: Any) -> Mixer:
    cls = get_mixer(name)
    unknown = set(hparams) - set(cls.hparam_names())
    if unknown:
        raise TypeError(f"mixer {name!r} has no hyperparameter(s) {sorted(unknown)}; it takes {cls.hparam_names()}")
    return cls(d_model, n_heads, causal=causal, impl=impl, **hparams)
