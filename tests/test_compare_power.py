"""Power of `trajbench diff` and its minimum-detectable-effect statement, by simulation against
planted ground truth (benchmarks/diff_power.py prints the full table)."""

import numpy as np
import pytest

from bench.adapters.sim import SimAgent
from bench.analysis.regression import PairedCounts, compare_counts, suite_test
from bench.world.suite import load_suite

ALPHA = 0.05


@pytest.fixture(scope="module")
def retail_p():
    """The known per-task success probabilities of sim:noisy?p=0.2..0.95 on retail's 36 tasks."""
    agent = SimAgent(p="0.2..0.95")
    return np.array([agent.nominal_p(t) for t in load_suite("retail").tasks])


def _power(p, q, k, reps, seed):
    rng = np.random.default_rng(seed)
    T = p.size
    hits = 0
    for r in range(reps):
        pc = PairedCounts.of(range(T), [k] * T, rng.binomial(k, p), [k] * T, rng.binomial(k, q))
        hits += suite_test(pc, k, alpha=ALPHA, permutations=499, seed=r)["significant_regression"]
    return hits / reps


@pytest.mark.slow
@pytest.mark.parametrize("k", [4, 8, 16])
def test_power_at_the_stated_mde_is_about_80_percent(retail_p, k):
    """The MDE that a diff states (from its own data, no change) is the drop at which the gate
    really has about 80% power."""
    rng = np.random.default_rng(k)
    T = retail_p.size
    stated = [compare_counts(PairedCounts.of(range(T), [k] * T, rng.binomial(k, retail_p), [k] * T,
                                             rng.binomial(k, retail_p)), k=k, permutations=499, bootstrap=0, seed=i)["mde"]["drop"]
              for i in range(5)]
    drop = float(np.median(stated))
    power = _power(retail_p, np.clip(retail_p - drop, 0, 1), k, 250, seed=100 + k)
    assert 0.68 <= power <= 0.93, (k, drop, power)


@pytest.mark.slow
def test_power_grows_with_the_drop_and_with_k(retail_p):
    table = {(k, d): _power(retail_p, np.clip(retail_p - d, 0, 1), k, 150, seed=k)
             for k in (4, 16) for d in (0.05, 0.1, 0.2, 0.4)}
    for k in (4, 16):
        row = [table[(k, d)] for d in (0.05, 0.1, 0.2, 0.4)]
        assert row == sorted(row) and row[-1] >= 0.99, (k, row)
    assert table[(16, 0.1)] > table[(4, 0.1)]
