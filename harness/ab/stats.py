"""The decision of ``harness ab`` for one cell: the median over rounds of the paired ratio HEAD/BASE, a bootstrap
confidence interval of that median over rounds, and a verdict that flags a move only when it is both larger than
the threshold and significant.

Pairing: in round r both sides measure the cell back to back (A B, then B A in the next round), so the ratio of
round r compares two measurements taken seconds apart, and a change of the machine's load between rounds (other
jobs starting or stopping) divides out. Each measurement is itself the median of the cell's repeats after warm-up
(``harness.device.time_callable``).

Interval: percentile bootstrap of the median of log ratios, resampling rounds with replacement (``resamples``
draws, fixed ``seed``: the same rounds give the same interval). With R rounds the median of a resample is one of
the R ratios, so the interval is a pair of observed ratios; at R = 5 and 95% it excludes 1 only when at least 4 of 5
rounds moved the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

VERDICTS = ("slower", "faster", "same", "failed")


@dataclass(frozen=True)
class Ratio:
    ratio: float  # median over rounds of head / base
    low: float  # confidence interval of that median
    high: float
    rounds: int  # rounds in which both sides measured the cell


def paired_ratio(base: list[float], head: list[float], confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> Ratio:
    """Median HEAD/BASE over rounds (pairs with the same index) and its bootstrap interval."""
    if len(base) != len(head) or not base:
        raise ValueError(f"need the same number (>= 1) of base and head times, got {len(base)} and {len(head)}")
    logs = np.log(np.asarray(head, dtype=float)) - np.log(np.asarray(base, dtype=float))  # (R,)
    rng = np.random.default_rng(seed)
    draws = logs[rng.integers(0, len(logs), size=(resamples, len(logs)))]  # (resamples, R)
    medians = np.median(draws, axis=1)  # (resamples,)
    tail = (1 - confidence) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    return Ratio(math.exp(float(np.median(logs))), math.exp(float(low)), math.exp(float(high)), len(logs))


def verdict(r: Ratio, threshold: float) -> str:
    """``slower`` (flagged): the median ratio exceeds 1 + threshold and the interval lies above 1; ``faster``: the
    mirror image (below 1 / (1 + threshold), interval below 1; reported, never flagged); else ``same``."""
    if r.ratio > 1 + threshold and r.low > 1:
        return "slower"
    if r.ratio < 1 / (1 + threshold) and r.high < 1:
        return "faster"
    return "same"
