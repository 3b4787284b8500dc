"""``RunData``: everything a report shows, loaded once from a run directory.

A run directory holds ``results.jsonl`` (the rows), ``env.json``, ``suite.yaml`` (the resolved suite), ``specs.json``
(the mixers' specs at run time) and ``figures.json`` (figures a benchmark kind computed when the run started, such as
the KV cache per token of published configurations: see ``Benchmark.run_figures``). The report reads only these:
it never builds a model, so an old run's report does not depend on today's code.

The suite is re-validated into its pydantic models (``harness.config.Suite``) and each entry's ``params`` into its
kind's ``Params`` model (``RunData.params``), so defaults are the schema's, never re-applied by report code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel

from ..config import BenchmarkEntry, Suite
from ..results import load_results


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


@dataclass
class RunData:
    out: Path  # the run directory; plots are saved under out / "plots"
    df: pd.DataFrame  # every row of results.jsonl
    suite: Suite  # the validated suite the run was made with
    env: dict = field(default_factory=dict)  # env.json
    specs: dict = field(default_factory=dict)  # specs.json: mixer registry name -> MixerSpec.as_dict()
    figures: dict = field(default_factory=dict)  # figures.json: benchmark label -> figures computed at run start
    resolved: dict = field(default_factory=dict)  # the rest of suite.yaml: source, device, only, resolved mixers
    planned: dict = field(default_factory=dict)  # plan.json: entry label -> planned cell ids ({} for older runs)
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, out: str | Path) -> "RunData":
        out = Path(out)
        path = out / "suite.yaml"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no suite.yaml in the run directory (written when a run starts)")
        resolved = yaml.safe_load(path.read_text()) or {}
        suite = Suite.model_validate(resolved.pop("suite", {}))
        df = load_results(out) if (out / "results.jsonl").exists() else pd.DataFrame()
        return cls(out, df, suite, _json(out / "env.json"), _json(out / "specs.json"),
                   _json(out / "figures.json"), resolved, _json(out / "plan.json").get("cells", {}))

    @property
    def plots(self) -> Path:
        (self.out / "plots").mkdir(parents=True, exist_ok=True)
        return self.out / "plots"

    def rows(self, entry_label: str) -> pd.DataFrame:
        """The rows of one benchmark entry (by its label: ``name``, else ``kind``)."""
        if self.df.empty or "benchmark" not in self.df:
            return self.df.iloc[0:0]
        return self.df[self.df["benchmark"] == entry_label]

    def entries(self, kind: str) -> list[BenchmarkEntry]:
        """The suite's benchmark entries of a kind, in suite order."""
        return [e for e in self.suite.benchmarks if e.kind == kind]

    def entry(self, label: str) -> BenchmarkEntry:
        return next(e for e in self.suite.benchmarks if e.label == label)

    def rows_of_kind(self, kind: str) -> pd.DataFrame:
        labels = [e.label for e in self.entries(kind)]
        if self.df.empty or "benchmark" not in self.df:
            return self.df.iloc[0:0]
        return self.df[self.df["benchmark"].isin(labels)]

    def params(self, entry: BenchmarkEntry) -> BaseModel:
        """The entry's ``params`` validated by its kind's schema (the defaults are the schema's)."""
        from ..benchmarks import validate_params

        return validate_params(entry.kind, entry.params)

    def pending(self) -> dict[str, int]:
        """Entry label -> number of planned cells without a committed result (only entries with some missing;
        empty for a complete run, or a run directory older than plan.json)."""
        done = set(self.df["cell_id"]) if "cell_id" in self.df else set()
        missing = {label: sum(1 for c in ids if c not in done) for label, ids in self.planned.items()}
        return {label: n for label, n in missing.items() if n}

    def cached(self, key: Any, compute) -> Any:
        """A value computed once per report (e.g. the exponent fits, shared by several sections)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]
