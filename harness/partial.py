"""Completed trainings of a cell that has not committed yet, so that a long cell resumes where it was cut off.

A recall cell trains once per learning rate of its sweep (and again per extra seed): at (256, 16) one cell of a slow
mixer takes hours on a CPU, longer than a sitting. The journal (``harness.results``) commits whole cells only, so a
cell stopped mid-sweep (SIGTERM, the end of a session, a crash, its time budget) would start again from nothing.
Here each finished training of such a cell is kept in ``OUT/partial/<cell>/<lr>-<seed>.json``; the next attempt at
the same cell takes it instead of training again.

A kept training is reused only when its fingerprint equals the new attempt's: the cell's coordinates, the
benchmark's parameters, and a hash of the code that trains it (every module of ``harness`` and ``architectures``
and the file of the cell's mixer, read from disk: an edit, committed or not, makes every kept training stale, and
a stale one is trained again). Rows of a reused training say so (``reused_training``, with the device and time it
was trained at). The runner removes a cell's directory when the cell commits ok; after a failure (timeout, crash)
it stays, so ``--rerun`` of that cell continues from it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

PARTIAL_DIR = "partial"


def safe_name(text: str) -> str:
    """A cell id as a file name (cell ids hold '/', '[' and ']')."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def cell_dir(out: Path, cell_id: str) -> Path:
    return Path(out) / PARTIAL_DIR / safe_name(cell_id)


def clear(out: Path, cell_id: str) -> None:
    """Forget a cell's kept trainings (the runner calls it once the cell has committed ok)."""
    shutil.rmtree(cell_dir(out, cell_id), ignore_errors=True)


@functools.lru_cache(maxsize=None)
def _package_hash() -> str:
    import architectures

    import harness

    digest = hashlib.sha256()
    for package in (architectures, harness):
        root = Path(package.__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_hash(*objects: Any) -> str:
    """sha256 of the harness and architectures sources and of the files defining ``objects`` (a plugin's mixer)."""
    digest = hashlib.sha256(_package_hash().encode())
    for obj in objects:
        source = inspect.getsourcefile(obj)
        if source:
            digest.update(Path(source).read_bytes())
    return digest.hexdigest()


class TrainingCache:
    """The kept trainings of one cell. ``fingerprint``: JSON-able, everything a training's outcome depends on."""

    def __init__(self, out: Path | None, cell_id: str, fingerprint: dict, device_name: str):
        self.dir = cell_dir(out, cell_id) if out is not None else None
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))  # as it reads back from a file
        self.device_name = device_name

    def _path(self, lr: float, seed: int) -> Path:
        return self.dir / f"lr={lr!r}-seed={seed}.json"

    def get(self, lr: float, seed: int) -> dict | None:
        """The kept record ``{"outcome" | "diverged", "device_name", "time_utc"}`` of (lr, seed), or None."""
        if self.dir is None or not self._path(lr, seed).exists():
            return None
        try:
            record = json.loads(self._path(lr, seed).read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a torn or unreadable file: train again
        return record if record.get("fingerprint") == self.fingerprint else None

    def put(self, lr: float, seed: int, **record: Any) -> None:
        """Keep a finished training (written to a temporary file, then renamed: never half a record)."""
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        record = {"fingerprint": self.fingerprint, "device_name": self.device_name,
                  "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
        tmp = self._path(lr, seed).with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(record, default=str))
        os.replace(tmp, self._path(lr, seed))

    def wrap(self, train_one: Callable[[float, int], Any], encode: Callable[[Any], dict],
             decode: Callable[[dict], Any]) -> Callable[[float, int], Any]:
        """``train_one(lr, seed)`` that returns a kept outcome (``decode``d, with ``reused`` set in it) when there is
        one, else trains and keeps it (``encode``d); a divergence (FloatingPointError) is kept and raised again."""

        def cached(lr: float, seed: int) -> Any:
            record = self.get(lr, seed)
            if record is not None:
                if "diverged" in record:
                    raise FloatingPointError(record["diverged"])
                return {**decode(record["outcome"]),
                        "reused": {"trained_on": record["device_name"], "trained_utc": record["time_utc"]}}
            try:
                outcome = train_one(lr, seed)
            except FloatingPointError as err:
                self.put(lr, seed, diverged=str(err))
                raise
            self.put(lr, seed, outcome=encode(outcome))
            return outcome

        return cached


def encode_dataclasses(outcome: dict) -> dict:
    """An outcome dict whose values may be dataclasses (a TrainResult), as plain JSON-able values."""
    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in outcome.items()}
