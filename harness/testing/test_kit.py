"""The fidelity kit as pytest tests: ``pytest --pyargs harness.testing``.

Which mixers: the glob in ``TRANSFORMER_BENCH_CHECK`` (e.g. ``"my_attn*"``), else every mixer a plugin package
registered (``architectures.plugins``); none: the tests are skipped with the reason."""
from __future__ import annotations

import fnmatch
import os

import pytest

import architectures
from architectures.plugins import ORIGIN
from harness.testing.kit import CHECKS, Skip


def _mixers() -> list[str]:
    pattern = os.environ.get("TRANSFORMER_BENCH_CHECK")
    if pattern:
        return [n for n in architectures.list_mixers() if fnmatch.fnmatchcase(n, pattern)]
    return sorted(ORIGIN)


MIXERS = _mixers()


@pytest.mark.skipif(not MIXERS, reason="no plugin mixer installed and TRANSFORMER_BENCH_CHECK not set")
@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", MIXERS or ["(none)"])
def test_fidelity(name: str, check: str) -> None:
    try:
        CHECKS[check](name, None)
    except Skip as why:
        pytest.skip(str(why))
