"""How many trials a split needs: the power rule behind docs/divergence.md §6.1 and small k.

The detection table of docs/divergence.md ("bound" rows) and the report's "detectable at k = …"
are the same computation, kept here once: in a task of k trials, each trial takes a branch with
probability q and then succeeds with probability p_alt, otherwise succeeds with probability
p_main; the probability that the branch node's own exact two-sided test reaches p ≤ α is a sum
over the possible tables. It is an upper bound on what any analysis built on that test can
detect (no correction for the suite's other nodes, every trial reaching the node).
"""

from __future__ import annotations

from functools import lru_cache
from math import comb

import numpy as np

from bench.analysis.exact import boschloo_test, exact_test

K_LADDER = (8, 16, 32, 64)  # the k the report suggests: the table's columns, and one beyond
TARGET_POWER = 0.8
_NEGLIGIBLE = 1e-7  # tables rarer than this are left out of the sum (the bound loses < 1e-4)


def _pvalue(n_main: int, s_main: int, n_alt: int, s_alt: int, test: str) -> float:
    if test == "boschloo":
        return boschloo_test((n_main, n_alt), (s_main, s_alt))[0]
    return exact_test((n_main, n_alt), (s_main, s_alt))[0]


def _binom(n: int, p: float) -> np.ndarray:
    x = np.arange(n + 1)
    return np.array([comb(n, int(i)) for i in x], dtype=float) * p ** x * (1 - p) ** (n - x)


@lru_cache(maxsize=4096)
def detection_power(k: int, q: float, p_main: float, p_alt: float, alpha: float = 0.05,
                    test: str = "boschloo") -> float:
    """P(the branch's exact test gives p ≤ alpha) at k trials (see the module docstring)."""
    total = 0.0
    px = _binom(k, q)
    for x in range(1, k):  # trials taking the branch (0 or k: no branch at all)
        if px[x] < _NEGLIGIBLE:
            continue
        pa, pb = _binom(k - x, p_main), _binom(x, p_alt)
        for a in np.flatnonzero(pa * px[x] >= _NEGLIGIBLE).tolist():
            for b in np.flatnonzero(pa[a] * pb * px[x] >= _NEGLIGIBLE).tolist():
                if 0 < a + b < k and _pvalue(k - x, a, x, b, test) <= alpha:
                    total += px[x] * pa[a] * pb[b]
    return float(total)


def detectable_k(q: float, p_main: float, p_alt: float, alpha: float = 0.05, test: str = "boschloo",
                 ladder: tuple[int, ...] = K_LADDER) -> int | None:
    """The smallest k of `ladder` at which a split like this one (rates rounded to 0.05) is
    detected with probability ≥ TARGET_POWER, or None when even the largest is not enough."""
    q, p_main, p_alt = (round(min(1.0, max(0.0, v)) * 20) / 20 for v in (q, p_main, p_alt))
    if q in (0.0, 1.0) or p_main == p_alt:
        return None
    return next((k for k in ladder if detection_power(k, q, p_main, p_alt, alpha, test) >= TARGET_POWER), None)


@lru_cache(maxsize=64)
def smallest_testable_n(alpha: float = 0.05, test: str = "boschloo") -> int:
    """The fewest trials at a node for which some split of them can reach p ≤ alpha: below
    it, no branch is testable (Boschloo: 6, the 4 + 2 table giving 0.044; Fisher: 7)."""
    n = 2
    while not any(_pvalue(n - x, n - x, x, 0, test) <= alpha for x in range(1, n)):
        n += 1
    return n
