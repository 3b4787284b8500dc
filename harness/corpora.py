"""Byte-level text corpora for the quality benchmarks: vocabulary 256 (the UTF-8 bytes), no tokenizer, no download.

Sources (``CorpusSpec.kind``):

- ``pydoc`` (default, offline): the documentation text that ships with CPython, ``pydoc_data.topics.topics`` (the
  language reference topics behind ``help()``), the topic texts joined in sorted key order. Real English prose with
  code examples; about 0.47 MB with Python 3.11. Its exact size depends on the Python version, which the run's
  ``env.json`` records.
- ``file``: a local text file, or a directory whose files matching ``glob`` are read in sorted path order. Files
  must be UTF-8 (an error names the first file that is not).
- ``hf``: a Hugging Face dataset for users who are online, ``datasets.load_dataset(name, config, split=split,
  data_files=..., revision=...)[text_field]`` (``datasets`` is imported only here, and only for this kind). With
  ``name: json`` and ``data_files`` it reads local JSON lines, which is how the tests exercise this path offline.

Documents of a multi-document source (topics, files, dataset rows) are joined with a blank line (``"\\n\\n"``).

**Split** (fixed, documented, no leakage): the corpus bytes are cut once, contiguously: the first
``1 - val_fraction`` of the bytes are the training split, the rest (the last 10% by default) the validation split.
The cut is moved forward to the next UTF-8 character boundary so that the validation split decodes as text (lm-eval
scores strings). Training windows are drawn only from the training bytes, so no validation byte is ever trained on.

**Sampling**: ``causal_batches`` draws windows of ``seq_len + 1`` bytes at uniform random offsets of the training
split from a ``torch.Generator`` seeded with the run's seed, so every mixer sees the same batches in the same order.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

DOC_SEPARATOR = "\n\n"


class CorpusSpec(BaseModel):
    """Where the text comes from and how it is split. The ``corpus:`` block of a quality benchmark's params."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    kind: Literal["pydoc", "file", "hf"] = "pydoc"
    path: str | None = None  # file: a file or directory; relative paths are resolved against the suite's directory
    glob: str = "**/*"  # file, directory: which files to read (sorted by path)
    name: str | None = None  # hf: dataset name (or a packaged builder such as "json" / "text" with data_files)
    config: str | None = None  # hf: configuration name
    split: str = "train"  # hf: the split whose text is loaded (we then divide it into train/validation ourselves)
    text_field: str = "text"  # hf: the column holding the text
    data_files: str | list[str] | None = None  # hf: local files for packaged builders (resolved like `path`)
    revision: str | None = None  # hf: a dataset revision, for reproducibility
    max_bytes: int | None = Field(default=None, gt=0)  # use only the first max_bytes bytes of the text
    val_fraction: float = Field(default=0.1, gt=0, lt=1)  # the last fraction of the bytes is the validation split

    @model_validator(mode="after")
    def _needs(self) -> "CorpusSpec":
        if self.kind == "file" and not self.path:
            raise ValueError("corpus kind 'file' needs `path` (a text file or a directory)")
        if self.kind == "hf" and not self.name:
            raise ValueError("corpus kind 'hf' needs `name` (a Hugging Face dataset name)")
        return self


@dataclass(frozen=True)
class Corpus:
    description: str  # where the text came from, for reports and checkpoints
    data: bytes  # the whole corpus, UTF-8
    val_fraction: float

    @functools.cached_property
    def cut(self) -> int:
        return split_point(self.data, self.val_fraction)

    @property
    def train(self) -> bytes:
        return self.data[:self.cut]

    @property
    def val(self) -> bytes:
        return self.data[self.cut:]


# ---- the split ------------------------------------------------------------------------------------------------------

def is_continuation(byte: int) -> bool:
    """A UTF-8 continuation byte (10xxxxxx): never the first byte of a character."""
    return byte & 0xC0 == 0x80


def split_point(data: bytes, val_fraction: float) -> int:
    """Index of the first validation byte: floor((1 - val_fraction) * len), moved forward to a character boundary."""
    cut = math.floor(len(data) * (1 - val_fraction))
    while cut < len(data) and is_continuation(data[cut]):
        cut += 1
    return cut


def head_bytes(data: bytes, n: int | None) -> bytes:
    """The first n bytes of UTF-8 ``data``, moved back to a character boundary (all of it when n is None)."""
    if n is None or n >= len(data):
        return data
    while n > 0 and is_continuation(data[n]):
        n -= 1
    return data[:n]


# ---- sources --------------------------------------------------------------------------------------------------------

def assemble(texts: Iterable[Any], source: str) -> str:
    """Join documents with a blank line; every document must be a string."""
    docs = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{source}: document {i} is {type(text).__name__}, not text")
        docs.append(text)
    if not docs:
        raise ValueError(f"{source}: no documents")
    return DOC_SEPARATOR.join(docs)


def pydoc_text() -> str:
    from pydoc_data.topics import topics

    return assemble((topics[key] for key in sorted(topics)), "pydoc_data.topics")


def file_text(path: Path, glob: str = "**/*") -> str:
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.glob(glob) if p.is_file())
        if not files:
            raise FileNotFoundError(f"no files match {glob!r} under {path}")
    else:
        raise FileNotFoundError(f"corpus path {path} does not exist")
    texts = []
    for f in files:
        try:
            texts.append(f.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"{f} is not UTF-8 text ({err.reason} at byte {err.start}); narrow `glob` to text "
                             "files") from None
    return assemble(texts, str(path))


def dataset_text(dataset: Any, text_field: str, source: str) -> str:
    """The text of a loaded dataset (anything where ``dataset[text_field]`` is a sequence of strings)."""
    try:
        column = dataset[text_field]
    except (KeyError, ValueError) as err:
        names = getattr(dataset, "column_names", None)
        raise KeyError(f"{source}: no text field {text_field!r}" + (f"; columns: {names}" if names else "")) from err
    return assemble(column, source)


def hf_text(name: str, *, config: str | None = None, split: str = "train", text_field: str = "text",
            data_files: str | list[str] | None = None, revision: str | None = None) -> str:
    try:
        import datasets
    except ImportError:
        raise ImportError("corpus kind 'hf' needs the `datasets` package (pip install datasets)") from None
    kwargs: dict[str, Any] = {"split": split}
    if data_files is not None:
        kwargs["data_files"] = data_files
    if revision is not None:
        kwargs["revision"] = revision
    dataset = datasets.load_dataset(name, config, **kwargs)
    return dataset_text(dataset, text_field, f"{name}[{split}]")


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p.resolve()


def resolved_spec(spec: CorpusSpec, base_dir: Path | None = None) -> CorpusSpec:
    """The spec with `path` and `data_files` made absolute (relative to ``base_dir``, the suite's directory)."""
    update: dict[str, Any] = {}
    if spec.path is not None:
        update["path"] = str(_resolve(spec.path, base_dir))
    if spec.data_files is not None:
        files = [spec.data_files] if isinstance(spec.data_files, str) else spec.data_files
        resolved = [str(_resolve(f, base_dir)) for f in files]
        update["data_files"] = resolved[0] if isinstance(spec.data_files, str) else resolved
    return spec.model_copy(update=update)


def load_corpus(spec: CorpusSpec | None = None, base_dir: Path | None = None) -> Corpus:
    """Load (and cache) the corpus a spec names. Relative paths are resolved against ``base_dir``."""
    spec = resolved_spec(spec or CorpusSpec(), base_dir)
    return _load(spec.model_dump_json())


@functools.lru_cache(maxsize=4)
def _load(spec_json: str) -> Corpus:
    spec = CorpusSpec.model_validate_json(spec_json)
    if spec.kind == "pydoc":
        import sys

        text = pydoc_text()
        description = f"pydoc_data.topics (Python {sys.version.split()[0]})"
    elif spec.kind == "file":
        text = file_text(Path(spec.path), spec.glob)
        description = f"file {spec.path}" + (f" ({spec.glob})" if Path(spec.path).is_dir() else "")
    else:
        text = hf_text(spec.name, config=spec.config, split=spec.split, text_field=spec.text_field,
                       data_files=spec.data_files, revision=spec.revision)
        description = f"hf {spec.name}" + (f"/{spec.config}" if spec.config else "") + f"[{spec.split}]"
    data = head_bytes(text.encode("utf-8"), spec.max_bytes)
    return Corpus(description=description, data=data, val_fraction=spec.val_fraction)


# ---- batches --------------------------------------------------------------------------------------------------------

def as_tensor(data: bytes) -> torch.Tensor:
    """Bytes -> (N,) uint8 tensor (a copy)."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def random_windows(data: torch.Tensor, length: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, length) int64 windows of ``data`` at uniform random offsets."""
    if len(data) < length:
        raise ValueError(f"the training split has {len(data)} bytes, fewer than one window of {length}")
    starts = torch.randint(0, len(data) - length + 1, (batch,), generator=generator)
    idx = starts[:, None] + torch.arange(length)  # (batch, length)
    return data[idx].long()


def causal_batches(train: bytes, seq_len: int, batch: int, seed: int,
                   device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (inputs, targets) batches for next-byte prediction: (B, T) each, targets = inputs shifted by one."""
    data, gen = as_tensor(train), torch.Generator().manual_seed(seed)
    while True:
        w = random_windows(data, seq_len + 1, batch, gen)  # (B, T + 1)
        yield w[:, :-1].to(device), w[:, 1:].to(device)


def mask_tokens(x: torch.Tensor, mask: torch.Tensor, mask_id: int, ignore_index: int) -> tuple[torch.Tensor,
                                                                                                   torch.Tensor]:
    """Masked-LM inputs and targets: masked positions become ``mask_id`` in the input and are the only targets."""
    inputs = x.masked_fill(mask, mask_id)
    targets = x.masked_fill(~mask, ignore_index)
    return inputs, targets


def masked_batches(train: bytes, seq_len: int, batch: int, seed: int, mask_prob: float, mask_id: int,
                   ignore_index: int, device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor,
                                                                                              torch.Tensor]]:
    """Endless masked-LM batches: each byte is masked independently with probability ``mask_prob`` (every masked
    byte is replaced by ``mask_id``; no BERT 80/10/10 mix), at least one per window."""
    data, gen = as_tensor(train), torch.Generator().manual_seed(seed)
    while True:
        x = random_windows(data, seq_len, batch, gen)  # (B, T)
        mask = torch.rand(x.shape, generator=gen) < mask_prob  # (B, T)
        mask[torch.arange(batch), torch.randint(0, seq_len, (batch,), generator=gen)] = True
        inputs, targets = mask_tokens(x, mask, mask_id, ignore_index)
        yield inputs.to(device), targets.to(device)
