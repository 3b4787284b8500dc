"""The decision of ``harness ab`` for one cell: the median over rounds of the paired ratio HEAD/BASE, a
distribution-free confidence interval of that median, and a verdict that flags a move only when it is both larger
than the threshold and significant.

Pairing: in round r both sides measure the cell back to back (A B, then B A in the next round), so the ratio of
round r compares two measurements taken seconds apart, and a change of the machine's load between rounds (other
jobs starting or stopping) divides out. Each measurement is itself the median of the cell's repeats after warm-up
(``harness.device.time_callable``).

Interval: the sign-test (binomial order-statistic) interval of the median ratio: with R rounds sorted, the k-th
smallest and k-th largest ratio bound the median with probability 1 - 2 P(Binomial(R, 1/2) < k), whatever the
distribution of the noise, as long as rounds are independent (hence a fresh process per side each round, see
``run.py``); k is the largest that reaches the confidence asked. It is deterministic (no resampling seed) and exact
where a bootstrap of the median over 4-8 rounds is not: at R = 6 and 95% it is [min, max] (coverage 96.9%), so a
cell is flagged only when all six rounds found HEAD slower; 95% needs R >= 6 (``min_rounds``).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

VERDICTS = ("slower", "faster", "same", "failed")


@dataclass(frozen=True)
class Ratio:
    ratio: float  # median over rounds of head / base
    low: float  # confidence interval of that median
    high: float
    rounds: int  # rounds in which both sides measured the cell
    coverage: float = 1.0  # the interval's exact coverage (>= the confidence asked, when enough rounds)


def _coverage(rounds: int, k: int) -> float:
    """P(the k-th smallest and k-th largest of ``rounds`` draws bracket the median) = 1 - 2 P(Bin(R, 1/2) < k)."""
    below = sum(math.comb(rounds, i) for i in range(k)) / 2 ** rounds
    return 1 - 2 * below


def min_rounds(confidence: float) -> int:
    """The fewest rounds whose widest interval [min, max] reaches ``confidence``."""
    rounds = 1
    while _coverage(rounds, 1) < confidence:
        rounds += 1
    return rounds


def paired_ratio(base: list[float], head: list[float], confidence: float = 0.95) -> Ratio:
    """Median HEAD/BASE over rounds (pairs with the same index) and its sign-test interval."""
    if len(base) != len(head) or not base:
        raise ValueError(f"need the same number (>= 1) of base and head times, got {len(base)} and {len(head)}")
    ratios = sorted(h / b for b, h in zip(base, head))
    n = len(ratios)
    k = 1
    while k < (n + 1) // 2 and _coverage(n, k + 1) >= confidence:
        k += 1
    return Ratio(statistics.median(ratios), ratios[k - 1], ratios[n - k], n, _coverage(n, k))


def verdict(r: Ratio, threshold: float) -> str:
    """``slower`` (flagged): the median ratio exceeds 1 + threshold and the interval lies above 1; ``faster``: the
    mirror image (below 1 / (1 + threshold), interval below 1; reported, never flagged); else ``same``."""
    if r.ratio > 1 + threshold and r.low > 1:
        return "slower"
    if r.ratio < 1 / (1 + threshold) and r.high < 1:
        return "faster"
    return "same"
