"""ficklenet.analysis.stats: the paired comparison against closed forms and a literal
enumeration of the sign flips."""

from __future__ import annotations

import itertools
import math

import pytest

from ficklenet.analysis.stats import SIGNIFICANCE, fmt, mean_std, paired, reading, summarize


def _literal_sign_flip_p(diffs: list[float]) -> float:
    """P(|mean of the flipped differences| >= |mean|) over all 2^n sign patterns."""
    n = len(diffs)
    target = abs(sum(diffs) / n)
    flips = [
        abs(sum(s * d for s, d in zip(signs, diffs, strict=True)) / n)
        for signs in itertools.product((1, -1), repeat=n)
    ]
    return sum(f >= target - 1e-12 for f in flips) / len(flips)


def test_mean_and_sample_std():
    assert mean_std([1.0]) == (1.0, None)
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    # sum of squares about 7/3: 16/9 + 1/9 + 25/9 = 42/9, over n - 1 = 2
    assert std == pytest.approx(math.sqrt(42 / 9 / 2))


@pytest.mark.parametrize(
    "diffs",
    [[0.06, 0.01, 0.05], [0.3, -0.1], [0.02, -0.01, 0.03, 0.04, 0.0], [-0.5, -0.4, -0.45, -0.6]],
)
def test_paired_against_closed_forms(diffs):
    b = {s: 0.5 for s in range(len(diffs))}
    a = {s: 0.5 + d for s, d in enumerate(diffs)}
    c = paired(a, b)
    n = len(diffs)
    mean = sum(diffs) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    t = mean / (std / math.sqrt(n))
    assert c["mean"] == pytest.approx(mean) and c["std"] == pytest.approx(std)
    assert c["t"] == pytest.approx(t)
    # Student's t, two-sided: with 1 degree of freedom the Cauchy law, with 2 a closed form.
    if n == 2:
        assert c["p_t"] == pytest.approx(1 - 2 / math.pi * math.atan(abs(t)), abs=1e-9)
    if n == 3:
        assert c["p_t"] == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t), abs=1e-9)
    # The confidence interval is mean ± t_{0.975, n-1} · std / sqrt(n): symmetric, and it
    # excludes 0 exactly when p < 0.05.
    low, high = c["ci95"]
    assert (low + high) / 2 == pytest.approx(mean)
    assert (low > 0 or high < 0) == (c["p_t"] < 0.05)
    if n == 2:  # t_{0.975, 1} = tan(0.475 pi)
        half = math.tan(0.475 * math.pi) * std / math.sqrt(2)
        assert high - mean == pytest.approx(half, rel=1e-9)
    assert c["p_permutation"] == pytest.approx(_literal_sign_flip_p(diffs))
    assert c["no_difference"] == (not c["p_t"] < SIGNIFICANCE)


def test_paired_edge_cases():
    assert paired({0: 1.0}, {0: 0.0}) is None  # one pair
    assert paired({0: 1.0, 1: 1.0}, {2: 0.0, 3: 0.0}) is None  # no seed in common
    same = paired({0: 0.7, 1: 0.8, 2: 0.9}, {0: 0.6, 1: 0.7, 2: 0.8})  # +0.1 every seed
    assert same["std"] == pytest.approx(0.0, abs=1e-12)
    assert same["p_t"] == 0.0 and not same["no_difference"] and reading(same) == "FickleNet higher"
    none = paired({0: 0.5, 1: 0.5}, {0: 0.5, 1: 0.5, 2: 0.1})
    assert none["seeds"] == [0, 1] and none["p_t"] == 1.0 and reading(none) == "no difference"


def test_summaries_and_formatting():
    runs = {0: {"m": 0.5, "x": None}, 1: {"m": 0.7, "x": 0.2}}
    summary = summarize(runs, ["m", "x", "absent"])
    assert summary["m"]["mean"] == pytest.approx(0.6) and summary["m"]["n"] == 2
    assert summary["x"] == {"mean": 0.2, "std": None, "n": 1}
    assert "absent" not in summary
    assert fmt(summary, "m") == "60.0 ± 14.1"
    assert fmt(summary, "x") == "20.0" and fmt(summary, "absent") == "–"
