"""Statistics over training seeds, as every study of ``experiments/`` reports them.

A row is summarised by its mean ± sample standard deviation (n - 1) over seeds. Two
rows trained with the same seeds are compared *paired*: seed by seed, the difference
of one figure; reported with its mean, standard deviation, the paired t test
(``scipy.stats.ttest_rel``) with its two-sided p-value and 95 % confidence interval
of the mean difference, and the exact sign-flip permutation p-value
(``scipy.stats.permutation_test`` over all 2^n sign patterns). A difference is read
as one only where the t test's p is below :data:`SIGNIFICANCE`. (The studies
measured at commit a02f831 read a mean outside ±2 standard errors as a difference,
which with three pairs lets through p ≈ 0.18.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

SIGNIFICANCE = 0.05  # a paired difference is read as one where the t test's p is below this
SAME = 1e-12  # differences within this of each other (relative) count as one value
CONFIDENCE = 0.95  # the level of the paired difference's confidence interval


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, None
    return mean, float(np.std(values, ddof=1))


def summarize(runs: dict[int, dict[str, float | None]], names: list[str]) -> dict[str, Any]:
    """{figure: {mean, std, n}} over the runs ({seed: figures}) that have it."""
    summary = {}
    for name in names:
        values = [r[name] for r in runs.values() if r.get(name) is not None]
        if values:
            mean, std = mean_std(values)
            summary[name] = {"mean": mean, "std": std, "n": len(values)}
    return summary


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
    """Paired comparison of a - b over the seeds both have (None below two pairs)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    x = np.array([a[s] for s in seeds], dtype=np.float64)
    y = np.array([b[s] for s in seeds], dtype=np.float64)
    diffs = x - y
    mean, std = mean_std(diffs.tolist())
    assert std is not None
    if np.ptp(diffs) > SAME * max(1.0, abs(mean)):
        test = stats.ttest_rel(x, y)
        t, p_t = float(test.statistic), float(test.pvalue)
        low, high = test.confidence_interval(CONFIDENCE)
        interval = [float(low), float(high)]
    else:  # every difference the same: none at all, or one beyond any noise
        mean = 0.0 if abs(mean) <= SAME else mean
        t = math.copysign(math.inf, mean) if mean else 0.0
        p_t = 0.0 if mean else 1.0
        interval = [mean, mean]
    flips = stats.permutation_test(
        (x, y),
        _mean_difference,
        permutation_type="samples",
        n_resamples=math.inf,
        vectorized=True,
        alternative="two-sided",
    )
    return {
        "seeds": seeds,
        "differences": diffs.tolist(),
        "mean": mean,
        "std": std,
        "t": t,
        "p_t": p_t,
        "ci95": interval,
        "p_permutation": float(flips.pvalue),
        "no_difference": not p_t < SIGNIFICANCE,
    }


def paired_on(
    a: dict[int, dict[str, float | None]], b: dict[int, dict[str, float | None]], name: str
) -> dict[str, Any] | None:
    """:func:`paired` on one figure of two rows' runs ({seed: figures})."""
    return paired(
        {s: r[name] for s, r in a.items() if r.get(name) is not None},
        {s: r[name] for s, r in b.items() if r.get(name) is not None},
    )


def reading(c: dict[str, Any]) -> str:
    """A paired comparison (FickleNet − deterministic) in words."""
    if c["no_difference"]:
        return "no difference"
    return "FickleNet higher" if c["mean"] > 0 else "deterministic higher"


def fmt(summary: dict[str, Any], name: str) -> str:
    """``mean ± std`` of one figure of a summary, in percent ("–" where missing)."""
    cell = summary.get(name)
    if cell is None:
        return "–"
    if cell["std"] is None:
        return f"{100 * cell['mean']:.1f}"
    return f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}"
