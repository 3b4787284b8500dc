"""``claims``: no measurement of its own. A suite that lists it asks its report to check a claims file (default
``claims/guide.yaml``, the guide's Master Comparison Table and text claims) against the figures measured by the
suite's other benchmarks (scaling, perplexity, mqar, equivalence): ``harness.claims`` computes the verdicts and
its report section renders the table. The file is copied into the run directory when the run starts, so a rebuilt
report keeps the claims the run was checked against."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, field_validator

from ..config import ResolvedMixer
from . import Benchmark, Cell, register_benchmark


class ClaimsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    file: str = "claims/guide.yaml"  # relative to the repository root, or absolute

    @field_validator("file")
    @classmethod
    def _loads(cls, v: str) -> str:
        from ..claims import load_claims, resolve_claims_path

        path = resolve_claims_path(v)
        try:  # a missing or invalid file is a suite error, reported before anything runs
            load_claims(path)
        except OSError as err:
            raise ValueError(f"cannot read claims file {path}: {err.strerror or err}") from None
        except Exception as err:  # noqa: BLE001 - YAML or schema errors, reported as the field's message
            raise ValueError(f"invalid claims file {path}: {err}") from None
        return v


@register_benchmark("claims")
class Claims(Benchmark):
    modes = ("forward",)
    Params = ClaimsParams
    description = "check a claims file against the suite's other benchmarks (report only; no cells)"

    report_summary = True  # the Master Comparison Table opens the report

    def cells(self, mixers: list[ResolvedMixer]) -> Iterator[Cell]:
        return iter(())

    def run_figures(self, cells: list[Cell], specs: dict[str, dict], out: Path) -> dict[str, Any]:
        """The claims the run is checked against stay with the run: ``OUT/claims.yaml`` (kept on resume)."""
        from ..claims import dump_claims, load_claims

        if not (out / "claims.yaml").exists():  # with every table cell stated (from the specs of this build)
            dump_claims(load_claims(self.params.file), out / "claims.yaml")
        return {}

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        from ._claims_report import section

        return section(run, entry)
