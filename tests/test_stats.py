"""Wilson intervals, the exact McNemar test and competition ranking, against independent computations."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from orchestrator.results.stats import Z95, binom_log_cdf_half, competition_rank, mcnemar_exact, mcnemar_paired, wilson


def exact_two_sided(b: int, c: int) -> float:
    """Brute force: 2 * sum_{i <= min(b,c)} C(n, i) / 2^n with exact integers, capped at 1."""
    n = b + c
    if n == 0:
        return 1.0
    term, total = 1, 1
    for i in range(1, min(b, c) + 1):
        term = term * (n - i + 1) // i
        total += term
    return float(min(Fraction(1), Fraction(2 * total, 2 ** n)))


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 10), (10, 10), (3, 10), (81, 263), (40413, 50000), (1, 50000)])
def test_wilson_closed_form(k, n):
    lo, hi = wilson(k, n)
    p, z2 = k / n, Z95 ** 2
    # The Wilson bounds are the roots in p of (p_hat - p)^2 = z^2 p (1 - p) / n.
    a, bq, cq = 1 + z2 / n, -(2 * p + z2 / n), p * p
    disc = math.sqrt(bq * bq - 4 * a * cq)
    assert lo == pytest.approx((-bq - disc) / (2 * a), abs=1e-12)
    assert hi == pytest.approx((-bq + disc) / (2 * a), abs=1e-12)
    assert 0.0 <= lo <= p <= hi <= 1.0


def test_wilson_edges():
    z2 = Z95 ** 2
    assert wilson(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert wilson(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    assert wilson(0, 0) == (0.0, 1.0)
    # Wider for fewer trials, and the known textbook value for 81 of 263 (0.2553, 0.3662).
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert np.diff(wilson(5, 10)) > np.diff(wilson(500, 1000))
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_mcnemar_matches_brute_force_small_n():
    for b in range(0, 31):
        for c in range(0, 31):
            assert mcnemar_exact(b, c) == pytest.approx(exact_two_sided(b, c), rel=1e-10, abs=1e-300), (b, c)


def test_mcnemar_symmetric_and_bounded():
    rng = np.random.default_rng(1)
    for b, c in rng.integers(0, 5000, size=(50, 2)):
        p = mcnemar_exact(int(b), int(c))
        assert p == mcnemar_exact(int(c), int(b))
        assert 0.0 <= p <= 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(7, 7) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(0, 1) == 1.0
    # More lopsided counts give smaller p.
    assert mcnemar_exact(10, 30) < mcnemar_exact(15, 25) < mcnemar_exact(19, 21)


@pytest.mark.parametrize("b,c", [(24800, 25200), (24000, 26000), (2000, 48000), (1, 49999)])
def test_mcnemar_stable_at_50000(b, c):
    p = mcnemar_exact(b, c)
    exact = exact_two_sided(b, c)
    assert math.isfinite(p) and 0.0 <= p <= 1.0
    if exact > 1e-300:
        assert p == pytest.approx(exact, rel=1e-8)
    else:
        # Far below double range: p underflows to 0, the exact log probability still agrees.
        assert p == 0.0 or p < 1e-300
        assert binom_log_cdf_half(min(b, c), b + c) == pytest.approx(exact_log_cdf(b, c), rel=1e-9)


def exact_log_cdf(b: int, c: int) -> float:
    """log P(X <= min(b, c)) from exact integers (math.log takes big ints exactly)."""
    n = b + c
    term, total = 1, 1
    for i in range(1, min(b, c) + 1):
        term = term * (n - i + 1) // i
        total += term
    return math.log(total) - n * math.log(2)


def test_mcnemar_paired_counts():
    a = np.array([1, 1, 1, 0, 0, 1], bool)
    b = np.array([1, 0, 0, 0, 1, 1], bool)  # discordant: a-only 2, b-only 1
    assert mcnemar_paired(a, b) == pytest.approx(exact_two_sided(2, 1))
    assert mcnemar_paired(a, a) == 1.0
    with pytest.raises(ValueError):
        mcnemar_paired(a, b[:3])


def test_competition_ranking():
    assert competition_rank([0.9, 0.8, 0.8, 0.7]) == [1, 2, 2, 4]
    assert competition_rank([0.7, 0.8, 0.9, 0.8]) == [4, 2, 1, 2]
    assert competition_rank([5, 5, 5]) == [1, 1, 1]
    assert competition_rank([3, 1, 2, 3, 1]) == [1, 4, 3, 1, 4]
    assert competition_rank([]) == []
    # Only exact ties share a rank.
    assert competition_rank([0.5, 0.5 - 1e-15]) == [1, 2]
    assert competition_rank(iter([2, 1])) == [1, 2]
