"""Small statistics for bench tables: mean, sample standard deviation, Welch t-interval.

Every standard deviation here is the *sample* one (``ddof=1``, the n-1 denominator), and it is
``None`` for fewer than two values: one seed says nothing about spread. The confidence interval
of a difference of two methods is Welch's unpaired t-interval over seeds (unequal variances,
Welch–Satterthwaite degrees of freedom).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats as _sp


def mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean, ``None`` for no values."""
    return sum(values) / len(values) if values else None


def sample_std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof=1); ``None`` for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float] | None:
    """``(mean(a) - mean(b), low, high)``: Welch's t-interval at ``level``; ``None`` below 2 values a side.

    When both samples have zero variance the interval collapses to the difference itself.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    diff = mean(a) - mean(b)
    va, vb = sample_std(a) ** 2 / len(a), sample_std(b) ** 2 / len(b)
    se2 = va + vb
    if se2 == 0:
        return diff, diff, diff
    df = se2 ** 2 / ((va ** 2 / (len(a) - 1) if va else 0.0) + (vb ** 2 / (len(b) - 1) if vb else 0.0))
    half = float(_sp.t.ppf(0.5 + level / 2, df)) * math.sqrt(se2)
    return diff, diff - half, diff + half
