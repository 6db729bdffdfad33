"""The statistics of a causal replay (docs/divergence.md §11), apart from the sampling
(`bench.analysis.causal`), so that the readers of a replay directory (`bench.analysis.replays`:
`report`, `verify`) compute the verdicts without building an agent.

* the continuation success rate of an arm, with its exact 95% Clopper–Pearson interval;
* the causal effect of an alternative: its rate minus the best alternative's, with Newcombe's
  hybrid-score 95% interval (method 10, from Wilson intervals);
* a verdict: **confirmed** when Boschloo's exact test (two-sided) of the alternative against
  the best one rejects at 5% after Holm's step-down across the node's alternatives;
  **not confirmed** otherwise.
* the point of no return along a failed trial's path: the earliest step i such that, from every
  prefix of length >= i, the upper 95% bound of the continuation success rate lies below the
  threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import stats

from bench.analysis.exact import boschloo_test
from bench.analysis.metrics import wilson_interval

ALPHA = 0.05
TEST = "Boschloo exact test (two-sided) of each alternative against the best, Holm step-down at 5%"


def clopper_pearson(c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (conservative) binomial interval; (0, 1) when n = 0."""
    if n == 0:
        return (0.0, 1.0)
    a = (1 - confidence) / 2
    lo = 0.0 if c == 0 else float(stats.beta.ppf(a, c, n - c + 1))
    hi = 1.0 if c == n else float(stats.beta.ppf(1 - a, c + 1, n - c))
    return (lo, hi)


def newcombe_difference(c1: int, n1: int, c2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 − p2 (method 10), from the two Wilson intervals."""
    p1, p2 = c1 / n1, c2 / n2
    l1, u1 = wilson_interval(c1, n1, confidence)
    l2, u2 = wilson_interval(c2, n2, confidence)
    d = p1 - p2
    return (max(-1.0, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)),
            min(1.0, d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence)."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[int(i)] = running
    return adjusted


@dataclass
class Arm:
    """Continuations from the node with one next step forced (`action`; None: the node itself)."""

    action: str | None
    n: int = 0
    successes: int = 0
    next_actions: list[str | None] = field(default_factory=list)  # (the node's own arm) what each took next

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else math.nan

    def as_dict(self) -> dict[str, Any]:
        lo, hi = clopper_pearson(self.successes, self.n)
        return {"action": self.action, "n": self.n, "successes": self.successes, "rate": _r(self.rate),
                "interval": [_r(lo), _r(hi)]}


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


def verdicts(arms: list[Arm]) -> list[dict[str, Any]]:
    """Each alternative's rate, effect against the best alternative and verdict (module docstring)."""
    if not arms:
        return []
    best = max(range(len(arms)), key=lambda i: (arms[i].rate, arms[i].n))
    b = arms[best]
    others = [i for i in range(len(arms)) if i != best]
    raw = [boschloo_test([arms[i].n, b.n], [arms[i].successes, b.successes])[0] for i in others]
    adjusted = dict(zip(others, holm(raw)))
    pvalue = dict(zip(others, raw))
    rows = []
    for i, arm in enumerate(arms):
        row = arm.as_dict()
        if i == best:
            row.update({"best": True, "effect": 0.0, "effect_interval": [0.0, 0.0], "p": None, "p_holm": None,
                        "verdict": "best"})
        else:
            lo, hi = newcombe_difference(arm.successes, arm.n, b.successes, b.n)
            confirmed = adjusted[i] <= ALPHA
            row.update({"best": False, "effect": _r(arm.rate - b.rate), "effect_interval": [_r(lo), _r(hi)],
                        "p": _r(pvalue[i]), "p_holm": _r(adjusted[i]),
                        "verdict": "confirmed" if confirmed else "not confirmed"})
        rows.append(row)
    return rows


def no_return_point(rows: list[dict[str, Any]], threshold: float) -> int | None:
    """The point of no return from the arms along a path, scanned from its end (`rows`: each
    arm's `as_dict()` with its `step`, last step first): the earliest step from which every
    later prefix's upper 95% bound lies below `threshold`; None when even the last one does not."""
    point = None
    for row in rows:
        if row["interval"][1] >= threshold:
            break
        point = row["step"]
    return point
