"""Small exact statistics for ranking: Wilson intervals, exact McNemar, competition ranks (no scipy)."""
from __future__ import annotations

import bisect
import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when ``n`` is 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson: need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def binom_log_cdf_half(k: int, n: int) -> float:
    """log P(X <= k) for X ~ Bin(n, 1/2), computed in log space (stable for n in the 10^5s)."""
    if k < 0:
        return -math.inf
    if k >= n:
        return 0.0
    i = np.arange(1, k + 1, dtype=np.float64)
    # log C(n, i) for i = 0..k by a running sum of log((n - i + 1) / i).
    log_comb = np.concatenate(([0.0], np.cumsum(np.log(n - i + 1) - np.log(i))))
    top = log_comb.max()
    return float(top + math.log(np.exp(log_comb - top).sum()) - n * math.log(2.0))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c``.

    p = min(1, 2 * P(X <= min(b, c))) with X ~ Bin(b + c, 1/2); 1.0 when there is no discordant pair.
    """
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact: discordant counts must be >= 0, got {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * math.exp(binom_log_cdf_half(min(b, c), n)))


def mcnemar_paired(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact McNemar p-value for two per-item correctness vectors over the same items."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar_paired: shapes differ ({a.shape} vs {b.shape})")
    return mcnemar_exact(int(np.count_nonzero(a & ~b)), int(np.count_nonzero(~a & b)))


def competition_rank(values: Sequence[float]) -> list[int]:
    """Standard competition ranks ("1224"), highest value first; only exactly equal values tie."""
    vals = list(values)
    negated = sorted(-v for v in vals)
    return [bisect.bisect_left(negated, -v) + 1 for v in vals]
