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
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator)

DTYPES = ("float32", "float16", "bfloat16", "float64")
DEVICE_TYPES = ("cpu", "cuda")
# A name that ends up in file names (plots, checkpoints, the default output directory): no path separators, no
# leading dot or dash, so that no suite can write outside its run directory.
SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
# Seconds: finite (.inf makes every cell fail in setitimer) and positive.
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class SuiteError(Exception):
    """A suite that cannot be used. ``problems`` is a list of "file:line: field: message" strings."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MixerEntry(Strict):
    name: str = Field(min_length=1)  # registry name (exact)
    # how it appears in results and file names; defaults to name (must be unique in the suite)
    label: str | None = Field(default=None, pattern=SLUG)
    impl: str | None = None  # None = the spec's default impl
    hparams: dict[str, Any] = Field(default_factory=dict)


def _unique(values: list | None) -> list | None:
    """A repeated value in a sweep would plan the same cell twice."""
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"values must be unique, got {values}")
    return values


class Sweep(Strict):
    seq_len: list[PositiveInt] = Field(default=[256, 512, 1024], min_length=1)
    batch: list[PositiveInt] = Field(default=[1], min_length=1)
    d_model: list[PositiveInt] = Field(default=[128], min_length=1)
    n_heads: list[PositiveInt] = Field(default=[4], min_length=1)
    dtype: list[Literal[DTYPES]] = Field(default=["float32"], min_length=1)  # type: ignore[valid-type]

    @field_validator("*")
    @classmethod
    def _no_repeats(cls, v: list | None) -> list | None:
        return _unique(v)


class SweepOverride(Strict):
    seq_len: list[PositiveInt] | None = Field(default=None, min_length=1)
    batch: list[PositiveInt] | None = Field(default=None, min_length=1)
    d_model: list[PositiveInt] | None = Field(default=None, min_length=1)
    n_heads: list[PositiveInt] | None = Field(default=None, min_length=1)
    dtype: list[Literal[DTYPES]] | None = Field(default=None, min_length=1)  # type: ignore[valid-type]

    @field_validator("*")
    @classmethod
    def _no_repeats(cls, v: list | None) -> list | None:
        return _unique(v)


class TimingOverride(Strict):
    """Timing settings of one benchmark entry that differ from the suite's ``timing`` (the others are inherited)."""
    warmup: int | None = Field(default=None, ge=0)
    min_run_time_s: PositiveFloat | None = None
    min_repeats: PositiveInt | None = None
    max_time_s: PositiveFloat | None = None


class BenchmarkEntry(Strict):
    kind: str
    name: str | None = Field(default=None, pattern=SLUG)  # used in plot file names: a slug
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
    suite: str = Field(min_length=1, pattern=SLUG)
    description: str = ""
    mixers: list[Union[str, MixerEntry]] = Field(min_length=1)
    allow_missing_mixers: bool = False
    seed: int = Field(default=0, ge=0, lt=2**63)
    time_budget_s: PositiveFloat = Field(default=120.0, le=1e7)  # setitimer and the kill deadline need a finite one
    timing: Timing = Field(default_factory=Timing)
    benchmarks: list[BenchmarkEntry] = Field(min_length=1)

    @field_validator("mixers")
    @classmethod
    def _no_empty_names(cls, v: list) -> list:
        for item in v:
            if isinstance(item, str) and not item.strip():
                raise ValueError("a mixer name cannot be empty")
        return v

    @field_validator("benchmarks")
    @classmethod
    def _unique_benchmark_labels(cls, v: list) -> list:
        labels = [b.label for b in v]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"benchmark names must be unique; repeated: {dupes} (give each a `name`)")
        return v


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
        shown = repr(got)
        msg += f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
    return msg


MAX_SUITE_BYTES = 1 << 20  # a suite is a page of YAML; anything near a megabyte is a mistake
MAX_NESTING = 32  # levels of mappings/lists; a suite needs about 6, so a deeper one is a mistake or an attack
MAX_EXPANDED_NODES = 100_000  # YAML nodes after alias expansion (a "billion laughs" document is refused before it)


def _read_text(path: Path) -> str:
    """The file as UTF-8 text, or SuiteError naming the file and line of what makes it unreadable."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SuiteError([f"{path}: (file): cannot read suite: {err.strerror or err}"]) from None
    if len(data) > MAX_SUITE_BYTES:
        raise SuiteError([f"{path}: (file): {len(data)} bytes; a suite is at most {MAX_SUITE_BYTES} bytes"])
    if b"\x00" in data:
        line = data[:data.index(b"\x00")].count(b"\n") + 1
        raise SuiteError([f"{path}:{line}: (file): a binary file (NUL byte), not a YAML suite"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise SuiteError([f"{path}:{line}: (file): not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                          f"{err.start}); save the suite as UTF-8"]) from None


def _compose(text: str, path: Path) -> yaml.Node | None:
    loader = yaml.SafeLoader(text)
    try:
        return loader.get_single_node()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SuiteError([f"{where}: (document): invalid YAML: {getattr(err, 'problem', None) or err}"]) from None
    except RecursionError:
        mark = loader.get_mark()
        raise SuiteError([f"{path}:{mark.line + 1}: (document): nesting too deep to be a suite"]) from None
    finally:
        loader.dispose()


def _check_nodes(root: yaml.Node, path: Path) -> list[str]:
    """Duplicate keys (YAML would keep the last silently) and the size after alias expansion, on the composed
    node graph, before anything is constructed. Iterative: deep nesting cannot overflow the stack here."""
    problems: list[str] = []
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, str, bool, int]] = [(root, "", False, 0)]
    on_path: set[int] = set()
    while stack:
        node, at, done, depth = stack.pop()
        if depth > MAX_NESTING:  # explicit, so the verdict does not depend on the interpreter's recursion limit
            return [f"{path}:{node.start_mark.line + 1}: (document): nesting deeper than {MAX_NESTING} levels; "
                    f"too deep to be a suite"]
        children = ([v for pair in node.value for v in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        if done:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 0) for c in children)
            if sizes[id(node)] > MAX_EXPANDED_NODES:
                return [f"{path}:{node.start_mark.line + 1}: {at or '(document)'}: expands to more than "
                        f"{MAX_EXPANDED_NODES} YAML nodes (aliases repeating aliases?); refused"]
            continue
        if id(node) in sizes:
            continue
        if id(node) in on_path:
            return [f"{path}:{node.start_mark.line + 1}: {at or '(document)'}: an alias refers to itself"]
        on_path.add(id(node))
        stack.append((node, at, True, depth))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                if isinstance(key, yaml.ScalarNode) and name != "<<":
                    if name in seen:
                        problems.append(f"{path}:{key.start_mark.line + 1}: {at + '.' if at else ''}{name}: "
                                        f"duplicate key (first at line {seen[name]}); YAML would keep only the last")
                    seen.setdefault(name, key.start_mark.line + 1)
                stack.append((key, at, False, depth + 1))
                stack.append((value, f"{at}.{name}" if at else str(name), False, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                stack.append((item, f"{at}[{i}]", False, depth + 1))
    return problems


def _construct(root: yaml.Node, path: Path) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(root)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else f"{path}:1"
        raise SuiteError([f"{where}: (document): {getattr(err, 'problem', None) or err}"]) from None
    except RecursionError:
        raise SuiteError([f"{path}:1: (document): nesting too deep to be a suite"]) from None
    finally:
        loader.dispose()


def parse_suite(path: str | Path) -> tuple[Suite, dict, yaml.Node | None]:
    """Parse a suite file and validate it against the schema (not the registries: ``harness.suites.load_suite``
    does both). Returns the model, the raw mapping and the YAML node tree (for line numbers); raises SuiteError
    whose every problem names the file, the line (where there is one) and the field."""
    path = Path(path)
    text = _read_text(path)
    root = _compose(text, path)
    problems = _check_nodes(root, path) if root is not None else []
    if problems:
        raise SuiteError(problems)
    raw = _construct(root, path) if root is not None else None
    if not isinstance(raw, dict):
        raise SuiteError([f"{path}:1: (top level): a suite must be a mapping with keys suite, mixers, benchmarks, "
                          f"...; got {type(raw).__name__ if raw is not None else 'an empty document'}"])
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            problems.append(f"{path}:{_line(root, loc)}: {_field_path(loc)}: {_describe(err)}")
        raise SuiteError(_dedupe_union_noise(problems)) from None
    except RecursionError:
        raise SuiteError([f"{path}:1: (document): nesting too deep to be a suite"]) from None
    return suite, raw, root


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


# ---- hyperparameters and shapes, checked before the first cell -------------------------------------------------------
# An integer hyperparameter is a count or a size (chunk_size, window, d_state, n_features, ...): at least 1, except
# these, for which 0 means something (an RNG seed; Transformer-XL without memory).
NONNEGATIVE_INT_HPARAMS = ("seed", "mem_len")
# Float hyperparameters that must be > 0 (epsilons, RoPE base, a key expansion factor) and in (0, 1] (a decay).
POSITIVE_FLOAT_HPARAMS = ("eps", "norm_eps", "rope_theta", "expand_k")
UNIT_INTERVAL_HPARAMS = ("decay",)


def _hparam_problem(cls, name: str, value: Any) -> str | None:
    """Why ``value`` is not a valid ``name`` of mixer ``cls`` (its constructor's annotation, then the rules above)."""
    import json
    import math
    import typing

    from pydantic import TypeAdapter

    hints = typing.get_type_hints(cls.__init__)
    annotation = hints.get(name, Any)
    try:
        value = TypeAdapter(annotation).validate_json(json.dumps(value), strict=True)
    except (ValidationError, TypeError, ValueError) as err:
        shown = typing.get_type_hints(cls.__init__).get(name)
        kind = getattr(shown, "__name__", None) or str(shown).replace("typing.", "")
        detail = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
        return f"expected {kind} (the constructor's annotation), got {value!r}: {detail}"
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        low = 0 if name in NONNEGATIVE_INT_HPARAMS else 1
        if value < low:
            return f"must be an integer >= {low}, got {value}"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return f"must be finite, got {value}"
        if name in POSITIVE_FLOAT_HPARAMS and value <= 0:
            return f"must be > 0, got {value}"
        if name in UNIT_INTERVAL_HPARAMS and not 0 < value <= 1:
            return f"must be in (0, 1], got {value}"
    elif isinstance(value, tuple) and any(isinstance(v, int) and not isinstance(v, bool) and v < 0 for v in value):
        return f"must hold integers >= 0, got {list(value)}"
    return None


def _shapes(suite: Suite, label: str) -> set[tuple[int, int]]:
    """(d_model, n_heads) pairs the benchmarks that select mixer ``label`` will build it with, on any device."""
    pairs = set()
    for bench in suite.benchmarks:
        if bench.mixers is not None and not any(fnmatch.fnmatchcase(label, g) for g in bench.mixers):
            continue
        for device_type in DEVICE_TYPES:
            sweep = bench.sweep_for(device_type)
            pairs.update((d, h) for d in sweep.d_model for h in sweep.n_heads)
    return pairs


_BUILT: dict[tuple, str | None] = {}


def _build_problem(name: str, impl: str, d: int, h: int, hparams: dict) -> str | None:
    """Build the mixer on the meta device (no memory, no compute): its own constructor checks (d_model divisible by
    n_heads, n_heads a multiple of n_kv_heads, an even window, ...) run now instead of in the first cell."""
    import json

    key = (name, impl, d, h, json.dumps(hparams, sort_keys=True, default=str))
    if key not in _BUILT:
        import torch

        import architectures

        cls = architectures.get_mixer(name)
        try:
            with torch.device("meta"):
                cls(d, h, causal="causal" in cls.spec.modes, impl=impl, **hparams)
            _BUILT[key] = None
        except Exception as err:  # noqa: BLE001 - the constructor's own message is the point
            _BUILT[key] = f"{type(err).__name__}: {err}"
    return _BUILT[key]


def check_mixer_hparams(suite: Suite, path: Path, root: yaml.Node | None) -> list[str]:
    """Each hparam's type and range, and every mixer built at each (d_model, n_heads) it will run with."""
    import architectures
    from architectures.registry import MIXERS

    problems = []
    for i, item in enumerate(suite.mixers):
        entry = MixerEntry(name=item) if isinstance(item, str) else item
        if any(ch in entry.name for ch in "*?[") or entry.name not in MIXERS:
            continue
        cls = architectures.get_mixer(entry.name)
        bad = False
        for hp, value in entry.hparams.items():
            problem = _hparam_problem(cls, hp, value) if hp in cls.hparam_names() else None
            if problem:
                loc = ("mixers", i, "hparams", hp)
                problems.append(f"{path}:{_line(root, loc)}: {_field_path(loc)}: {problem}")
                bad = True
        if bad:
            continue
        hparams = {**cls.spec.default_hparams, **entry.hparams}
        impl = entry.impl or cls.spec.default_impl
        for d, h in sorted(_shapes(suite, entry.label or entry.name)):
            problem = _build_problem(entry.name, impl, d, h, hparams)
            if problem:
                loc = ("mixers", i, "hparams") if entry.hparams else ("mixers", i)
                problems.append(f"{path}:{_line(root, loc)}: {_field_path(loc)}: mixer {entry.name!r} cannot be "
                                f"built with d_model={d}, n_heads={h}"
                                f"{', ' + str(entry.hparams) if entry.hparams else ''}: {problem}")
                break
    return problems


def check_shapes(suite: Suite, path: Path, root: yaml.Node | None) -> list[str]:
    """d_model divisible by n_heads in every sweep and profile (the head dimension must be whole)."""
    problems = []
    for i, bench in enumerate(suite.benchmarks):
        where = [("sweep",)] + [("profiles", dt) for dt in bench.profiles]
        for part in where:
            sweep = bench.sweep if part == ("sweep",) else bench.sweep_for(part[1])
            bad = sorted((d, h) for d in sweep.d_model for h in sweep.n_heads if d % h)
            if bad:
                field = "d_model" if part == ("sweep",) or bench.profiles[part[1]].d_model else "n_heads"
                loc = ("benchmarks", i, *part, field)
                problems.append(f"{path}:{_line(root, loc)}: {_field_path(loc)}: d_model must be divisible by "
                                f"n_heads; not so for (d_model, n_heads) = {', '.join(map(str, bad))}")
    return problems
