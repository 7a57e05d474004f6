"""Statistics of a benchmark: mean and spread over seeds, and a paired test between two models over users."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value)."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


@dataclass
class PairedTest:
    """Wilcoxon signed-rank test of ``a - b`` over paired users.

    ``n`` counts every pair, ``n_nonzero`` the pairs that differ (the test ranks only those);
    ``mean_difference`` is over all pairs; ``p_value`` is two-sided (NaN when no pair differs).
    """

    n: int
    n_nonzero: int
    mean_difference: float
    statistic: float
    p_value: float


def paired_wilcoxon(a, b) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test on paired per-user values ``a`` and ``b``.

    Pairs with equal values are dropped before ranking (Wilcoxon's original treatment); many users score 0
    under both models at a top-20 cut-off, and they carry no evidence either way. scipy takes the exact null
    distribution for small samples without ties and the normal approximation (with tie correction) otherwise.
    """
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have the same shape, got {a.shape} and {b.shape}")
    # values averaged over seeds can differ in the last bit where they are equal: that is no difference
    diff = np.round(a - b, 12)
    nonzero = int(np.count_nonzero(diff))
    mean = float(diff.mean()) if diff.size else math.nan
    if nonzero == 0:
        return PairedTest(int(diff.size), 0, mean, math.nan, math.nan)
    # equal pairs dropped here rather than by scipy, so a small sample without ties gets the exact distribution
    result = wilcoxon(diff[diff != 0], alternative="two-sided")
    return PairedTest(int(diff.size), nonzero, mean, float(result.statistic), float(result.pvalue))


def align_users(users_a: np.ndarray, values_a: np.ndarray, users_b: np.ndarray, values_b: np.ndarray):
    """Values of the users both runs evaluated, in one order: ``(users, values_a, values_b)``."""
    common, ia, ib = np.intersect1d(users_a, users_b, assume_unique=True, return_indices=True)
    return common, values_a[ia], values_b[ib]


def seed_mean_per_user(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Each user's value averaged over the runs (seeds) that evaluated them all: ``(users, mean values)``."""
    users = runs[0][0]
    for other, _ in runs[1:]:
        users = np.intersect1d(users, other, assume_unique=True)
    stacked = []
    for run_users, values in runs:
        index = np.searchsorted(run_users, users, sorter=np.argsort(run_users))
        stacked.append(values[np.argsort(run_users)[index]])
    return users, np.mean(stacked, axis=0)
