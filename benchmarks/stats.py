"""Statistics for the head-to-head tables: confidence intervals over seeds, paired tests
over users, and Holm's correction across the comparisons a report makes.

Report-side only (no run depends on it), so editing it never marks a result stale.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
from scipy import stats

TESTS = ("wilcoxon", "ttest")


def mean_ci(values: Sequence[float], level: float = 0.95) -> Tuple[float, float]:
    """(mean, half width of the Student-t confidence interval of the mean). One value
    gives a half width of nan: one seed says nothing about seed noise."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"mean_ci: expected a non-empty 1-d sequence, got {values!r}")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan")
    sem = float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * sem


def paired_pvalue(
    a: Sequence[float], b: Sequence[float], test: str = "wilcoxon"
) -> float:
    """Two-sided p-value of a paired test over users (``a[i]`` and ``b[i]`` are the same
    user's scores under two models). Wilcoxon signed-rank drops users whose two scores are
    equal (both models miss every test item of many users); identical vectors give 1."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired_pvalue: need two 1-d vectors of one length, got {a.shape} and {b.shape}"
        )
    if test not in TESTS:
        raise ValueError(f"paired_pvalue: test {test!r}; allowed: {', '.join(TESTS)}")
    diff = a - b
    if not np.any(diff):
        return 1.0
    if test == "ttest":
        return float(stats.ttest_rel(a, b).pvalue)
    return float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)


def holm(pvalues: Mapping[str, float]) -> Dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down; monotone; capped at 1)."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    m, running, adjusted = len(order), 0.0, {}
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[key]))
        adjusted[key] = running
    return adjusted


def align_users(
    users_a: Sequence[int],
    scores_a: Sequence[float],
    users_b: Sequence[int],
    scores_b: Sequence[float],
) -> Tuple[np.ndarray, np.ndarray]:
    """Two models' per-user scores on the users both evaluated, in one order; an error
    when the user sets differ (the two runs did not evaluate the same test users)."""
    users_a, users_b = np.asarray(users_a), np.asarray(users_b)
    if set(users_a.tolist()) != set(users_b.tolist()):
        raise ValueError(
            f"align_users: the runs evaluated different users ({len(users_a)} vs {len(users_b)})"
        )
    order_a, order_b = np.argsort(users_a), np.argsort(users_b)
    return np.asarray(scores_a, float)[order_a], np.asarray(scores_b, float)[order_b]
