"""Suite files: a strict pydantic schema, and errors that name the file, the line and the field.

A suite names registry entries (mixers, benchmark kinds), never import paths, and runs no code. Shape of a suite:

    suite: long_context                 # name, used in result rows and the default output directory
    description: ...
    mixers: ["*"]                       # registry names or globs, or {name, label, impl, hparams} entries
    allow_missing_mixers: false         # true: a name that is not registered is reported as missing, not an error
    seed: 0
    time_budget_s: 120                  # per cell; over it the cell is recorded as `timeout`
    timing: {warmup: 1, min_run_time_s: 0.2, min_repeats: 5, max_time_s: 10}
    benchmarks:
      - kind: scaling                   # a registered benchmark (python -m harness list benchmarks)
        name: scaling                   # optional label, defaults to the kind
        mixers: ["*"]                   # optional globs over the suite's mixers: which of them this benchmark runs
        modes: [forward, train, decode]
        sweep: {seq_len: [...], batch: [1], d_model: [128], n_heads: [4], dtype: [float32]}
        profiles: {cuda: {seq_len: [...], dtype: [bfloat16]}}   # per-device overrides of the sweep
        params: {...}                   # the benchmark kind's own options, validated by its schema
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator,
                      model_validator)

DTYPES = ("float32", "float16", "bfloat16", "float64")
DEVICE_TYPES = ("cpu", "cuda")


class SuiteError(Exception):
    """A suite that cannot be used. ``problems`` is a list of "file:line: field: message" strings."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MixerEntry(Strict):
    name: str = Field(min_length=1)  # registry name (exact)
    label: str | None = None  # how it appears in results; defaults to name (must be unique in the suite)
    impl: str | None = None  # None = the spec's default impl
    hparams: dict[str, Any] = Field(default_factory=dict)


class Sweep(Strict):
    seq_len: list[PositiveInt] = Field(default=[256, 512, 1024], min_length=1)
    batch: list[PositiveInt] = Field(default=[1], min_length=1)
    d_model: list[PositiveInt] = Field(default=[128], min_length=1)
    n_heads: list[PositiveInt] = Field(default=[4], min_length=1)
    dtype: list[Literal[DTYPES]] = Field(default=["float32"], min_length=1)  # type: ignore[valid-type]


class SweepOverride(Strict):
    seq_len: list[PositiveInt] | None = Field(default=None, min_length=1)
    batch: list[PositiveInt] | None = Field(default=None, min_length=1)
    d_model: list[PositiveInt] | None = Field(default=None, min_length=1)
    n_heads: list[PositiveInt] | None = Field(default=None, min_length=1)
    dtype: list[Literal[DTYPES]] | None = Field(default=None, min_length=1)  # type: ignore[valid-type]


class TimingOverride(Strict):
    """Timing settings of one benchmark entry that differ from the suite's ``timing`` (the others are inherited)."""
    warmup: int | None = Field(default=None, ge=0)
    min_run_time_s: PositiveFloat | None = None
    min_repeats: PositiveInt | None = None
    max_time_s: PositiveFloat | None = None


class BenchmarkEntry(Strict):
    kind: str
    name: str | None = None
    description: str = ""  # what this entry is for (shown under its section of the report)
    mixers: list[str] | None = Field(default=None, min_length=1)  # globs over the suite's mixer labels; None = all
    modes: list[str] = Field(default=["forward"], min_length=1)
    sweep: Sweep = Field(default_factory=Sweep)
    profiles: dict[Literal[DEVICE_TYPES], SweepOverride] = Field(default_factory=dict)  # type: ignore[valid-type]
    params: dict[str, Any] = Field(default_factory=dict)
    # CPU threads for this entry's cells, overriding the suite's timing.cpu_threads (e.g. "all" for training
    # benchmarks in a suite whose scaling entries time one thread)
    cpu_threads: PositiveInt | Literal["all"] | None = None
    # timing settings for this entry's cells, overriding the suite's (e.g. a longer max_time_s where one call of
    # exact attention at long n takes seconds, so that its median is still over several calls)
    timing: TimingOverride | None = None

    @property
    def label(self) -> str:
        return self.name or self.kind

    def select(self, mixers: list["ResolvedMixer"]) -> list["ResolvedMixer"]:
        """The suite's mixers that this benchmark runs (its `mixers:` globs, in the suite's order)."""
        if self.mixers is None:
            return mixers
        return [m for m in mixers if any(fnmatch.fnmatchcase(m.label, g) for g in self.mixers)]

    def timing_for(self, suite_timing: "Timing") -> "Timing":
        """The suite's timing with this entry's overrides applied."""
        if self.timing is None:
            return suite_timing
        return suite_timing.model_copy(update=self.timing.model_dump(exclude_none=True))

    def sweep_for(self, device_type: str) -> Sweep:
        override = self.profiles.get(device_type)
        if override is None:
            return self.sweep
        changes = {k: v for k, v in override.model_dump().items() if v is not None}
        return self.sweep.model_copy(update=changes)


class Timing(Strict):
    warmup: int = Field(default=1, ge=0)
    min_run_time_s: PositiveFloat = 0.2
    min_repeats: PositiveInt = 5
    max_time_s: PositiveFloat = 10.0
    # torch intra-op threads for CPU runs (None or "all": torch's default, every core). 1 makes a scaling exponent measure the
    # algorithm rather than how much better two threads split a larger tensor; `run --threads` overrides it.
    cpu_threads: PositiveInt | Literal["all"] | None = None


class Suite(Strict):
    suite: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    mixers: list[Union[str, MixerEntry]] = Field(min_length=1)
    allow_missing_mixers: bool = False
    seed: int = 0
    time_budget_s: PositiveFloat = 120.0
    timing: Timing = Field(default_factory=Timing)
    benchmarks: list[BenchmarkEntry] = Field(min_length=1)

    @field_validator("mixers")
    @classmethod
    def _no_empty_names(cls, v: list) -> list:
        for item in v:
            if isinstance(item, str) and not item.strip():
                raise ValueError("a mixer name cannot be empty")
        return v

    @model_validator(mode="after")
    def _unique_benchmark_labels(self) -> "Suite":
        labels = [b.label for b in self.benchmarks]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"benchmark names must be unique; repeated: {dupes} (give each a `name`)")
        return self


# ---- resolution against the registries ------------------------------------------------------------------------------

class ResolvedMixer(BaseModel):
    label: str
    name: str
    impl: str
    hparams: dict[str, Any]
    missing: bool = False  # not registered (only with allow_missing_mixers)


def resolve_mixers(suite: Suite, only: str | None = None) -> list[ResolvedMixer]:
    """Expand names and globs into concrete mixers with their impl and full hyperparameters.

    Raises ValueError (with the index of the offending entry in ``err.args[1]``) for unknown names, bad impls or
    hyperparameters. Names starting with "_" (test fixtures) are only matched exactly.
    """
    import architectures
    from architectures.registry import MIXERS, UnknownNameError

    out: list[ResolvedMixer] = []
    for i, item in enumerate(suite.mixers):
        entry = MixerEntry(name=item) if isinstance(item, str) else item
        if any(ch in entry.name for ch in "*?["):
            names = [n for n in architectures.list_mixers(entry.name) if not n.startswith("_")]
            if not names:
                raise ValueError(f"pattern {entry.name!r} matches no registered mixer", i)
            if entry.label or entry.hparams or entry.impl:
                raise ValueError("label, impl and hparams need an exact mixer name, not a pattern", i)
        else:
            names = [entry.name]
        for name in names:
            if name not in MIXERS:
                if suite.allow_missing_mixers:
                    out.append(ResolvedMixer(label=entry.label or name, name=name, impl="-", hparams={},
                                             missing=True))
                    continue
                raise ValueError(str(UnknownNameError("mixer", name, [n for n in MIXERS.list() if n[0] != "_"])), i)
            cls = architectures.get_mixer(name)
            impl = entry.impl or cls.spec.default_impl
            if impl not in cls.spec.impls:
                raise ValueError(f"mixer {name!r} has no impl {impl!r}; available: {list(cls.spec.impls)}", i)
            unknown = set(entry.hparams) - set(cls.hparam_names())
            if unknown:
                raise ValueError(f"mixer {name!r} has no hyperparameter(s) {sorted(unknown)}; "
                                 f"it takes {cls.hparam_names()}", i)
            hparams = {**cls.spec.default_hparams, **entry.hparams}
            out.append(ResolvedMixer(label=entry.label or name, name=name, impl=impl, hparams=hparams))
    seen: dict[str, ResolvedMixer] = {}
    deduped = []
    for m in out:
        if m.label in seen:
            if seen[m.label] == m:
                continue  # the same mixer named twice (e.g. by a glob and by name)
            raise ValueError(f"two different mixers share the label {m.label!r}; give one a `label`", None)
        seen[m.label] = m
        deduped.append(m)
    if only:
        deduped = [m for m in deduped if fnmatch.fnmatchcase(m.label, only) or fnmatch.fnmatchcase(m.name, only)]
        if not deduped:
            raise ValueError(f"--only {only!r} matches none of the suite's mixers", None)
    return deduped


# ---- loading with line numbers ----------------------------------------------------------------------------------

def _node_at(root: yaml.Node | None, loc: tuple) -> yaml.Node | None:
    """The YAML node at a pydantic error location (skipping union-branch tags such as 'str' or 'MixerEntry')."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if key.value == part:
                    node = value
                    break
            # a union tag or a missing key: stay on the current node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                node = node.value[part]
        else:
            continue
    return node


def _field_path(loc: tuple) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part in ("str", "MixerEntry") or part.startswith(("literal[", "function-")):
            continue  # union branch names, not fields
        else:
            parts.append(("." if parts else "") + part)
    return "".join(parts) or "(top level)"


def _line(root: yaml.Node | None, loc: tuple) -> int:
    node = _node_at(root, loc)
    return node.start_mark.line + 1 if node is not None else 1


def _describe(err: dict) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown key (not part of the schema; check the spelling)"
    if err["type"] == "missing":
        return "required field is missing"
    got = err.get("input")
    if got is not None and not isinstance(got, (dict, list)):
        msg += f" (got {got!r})"
    return msg


def _dedupe_union_noise(problems: list[str]) -> list[str]:
    """A wrong mixer entry fails both union branches; keep one message per line and field."""
    seen, out = set(), []
    for p in problems:
        key = p.split(": ", 2)[:2]
        if tuple(key) in seen:
            continue
        seen.add(tuple(key))
        out.append(p)
    return out


def parse_suite(path: str | Path) -> tuple[Suite, dict, yaml.Node | None]:
    """Parse a suite file and validate it against the schema (not the registries: ``harness.suites.load_suite``
    does both). Returns the model, the raw mapping and the YAML node tree (for line numbers); raises SuiteError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SuiteError([f"{path}: cannot read suite: {err.strerror or err}"]) from None
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SuiteError([f"{where}: invalid YAML: {getattr(err, 'problem', err)}"]) from None
    if not isinstance(raw, dict):
        raise SuiteError([f"{path}:1: a suite must be a mapping with keys suite, mixers, benchmarks, ..."])
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            problems.append(f"{path}:{_line(root, loc)}: {_field_path(loc)}: {_describe(err)}")
        raise SuiteError(_dedupe_union_noise(problems)) from None
    return suite, raw, root
