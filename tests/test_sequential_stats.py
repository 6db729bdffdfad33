"""The anytime-valid statistics against independent computation and simulated known truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.analysis.sequential import (
    drop_decision,
    log_drop_e_value,
    log_mixture_e_value,
    rate_cs,
    suite_pass1_cs,
    task_settled,
)


def _grid_mixture(successes: int, n: int, p0: float, upper: float = 1.0) -> float:
    """The uniform-prior mixture likelihood ratio by numerical integration (no Beta functions)."""
    q = np.linspace(0.0, upper, 200_001)
    lik = q**successes * (1 - q) ** (n - successes)
    alt = np.trapezoid(lik, q) / upper
    return float(alt / (p0**successes * (1 - p0) ** (n - successes)))


@pytest.mark.parametrize(("s", "n", "p0"), [(0, 5, 0.5), (3, 10, 0.7), (17, 20, 0.4), (9, 30, 0.9)])
def test_mixture_e_value_matches_numerical_integration(s: int, n: int, p0: float) -> None:
    assert math.exp(log_mixture_e_value(s, n, p0)) == pytest.approx(_grid_mixture(s, n, p0), rel=1e-6)


@pytest.mark.parametrize(("s", "n", "p0"), [(2, 10, 0.8), (5, 6, 0.6), (0, 12, 0.3)])
def test_drop_e_value_matches_truncated_integration(s: int, n: int, p0: float) -> None:
    expected = _grid_mixture(s, n, p0, upper=p0)
    assert math.exp(log_drop_e_value(s, n, p0)) == pytest.approx(expected, rel=1e-5)


def test_interval_ends_sit_on_the_threshold_and_shrink() -> None:
    lo, hi = rate_cs(30, 100)
    for end in (lo, hi):
        assert log_mixture_e_value(30, 100, end) == pytest.approx(math.log(20), abs=1e-6)
    assert rate_cs(300, 1000)[1] - rate_cs(300, 1000)[0] < hi - lo
    assert rate_cs(0, 0) == (0.0, 1.0)


def test_bad_counts_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="successes <= n"):
        rate_cs(5, 3)
    with pytest.raises(ValueError, match="alpha"):
        drop_decision(1, 3, 0.5, alpha=1.5)


def _paths(p: float, sims: int, n_max: int, seed: int) -> np.ndarray:
    """Cumulative successes of ``sims`` Bernoulli(p) streams, one row per stream."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.random((sims, n_max)) < p, axis=1)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_coverage_holds_at_every_n_simultaneously(p: float) -> None:
    sims, n_max, looks = 400, 60, range(1, 61, 3)
    paths = _paths(p, sims, n_max, seed=18)
    missed = 0
    for row in paths:
        for n in looks:
            lo, hi = rate_cs(int(row[n - 1]), n)
            if not lo <= p <= hi:
                missed += 1
                break
    assert 1 - missed / sims >= 0.93


@pytest.mark.parametrize("p", [0.7, 0.85])
def test_gate_false_alarm_rate_survives_peeking_every_trial(p: float) -> None:
    sims, n_max, alpha = 2000, 80, 0.05
    paths = _paths(p, sims, n_max, seed=7)
    n = np.arange(1, n_max + 1)
    alarms = 0
    for row in paths:
        if any(log_drop_e_value(int(s), int(k), 0.7) >= math.log(1 / alpha) for s, k in zip(row, n)):
            alarms += 1
    assert alarms / sims <= alpha + 0.01


def test_gate_detects_a_planted_drop_and_says_how_many_more_trials() -> None:
    paths = _paths(0.5, 300, 60, seed=3)
    rejected = sum(drop_decision(int(row[-1]), 60, 0.8).outcome == "regressed" for row in paths)
    assert rejected / 300 >= 0.8
    undecided = drop_decision(6, 10, 0.8)
    assert undecided.outcome == "not yet decided"
    assert undecided.extra_trials is not None and undecided.extra_trials > 0
    assert drop_decision(10, 10, 0.8).extra_trials is None


def test_suite_interval_covers_at_an_outcome_dependent_stopping_time() -> None:
    """Tasks stop once their own sequence is narrow (a rule that depends on the outcomes)."""
    rng = np.random.default_rng(11)
    truth = np.array([0.02, 0.05, 0.5, 0.95, 0.98, 0.7])
    covered, sims, k_max = 0, 150, 40
    for _ in range(sims):
        counts = []
        for p in truth:
            s = n = 0
            while n < k_max and not (n >= 2 and task_settled(s, n, 0.3)):
                s += int(rng.random() < p)
                n += 1
            counts.append((s, n))
        lo, hi = suite_pass1_cs(counts)
        covered += int(lo <= truth.mean() <= hi)
    assert covered / sims >= 0.93
    with pytest.raises(ValueError, match="at least one task"):
        suite_pass1_cs([])
