"""``claims``: no measurement of its own. A suite that lists it asks its report to check a claims file (default
``claims/guide.yaml``, the guide's Master Comparison Table and text claims) against the figures measured by the
suite's other benchmarks (scaling, perplexity, mqar, equivalence): ``harness.claims`` computes the verdicts and
``harness.report`` renders the table. The file is copied into the run directory when the report is first written,
so a rebuilt report keeps the claims the run was checked against."""
from __future__ import annotations

from typing import Iterator

from pydantic import BaseModel, ConfigDict, field_validator

from ..config import ResolvedMixer
from . import Benchmark, Cell, register_benchmark


class ClaimsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    file: str = "claims/guide.yaml"  # relative to the repository root, or absolute
    only: list[str] | None = None  # claim ids (globs) this suite checks; None: every claim of the file
    methods_table: bool = True  # render the Master Comparison Table (False: only the claims table)

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

    def cells(self, mixers: list[ResolvedMixer]) -> Iterator[Cell]:
        return iter(())
