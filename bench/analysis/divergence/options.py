"""The divergence analysis's options and inputs (docs/divergence.md).

Kept apart from the analysis itself so that what only needs the options — the command line's
`--divergence-*` flags, a caller building `TaskTrials` — imports no numpy or scipy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

END = "<end>"  # the pseudo-key every trajectory ends in: stopping early is an alternative like any other


@dataclass(frozen=True)
class DivergenceOptions:
    """How steps are keyed and branches tested. Every field is recorded in the output."""

    key: str = "action"  # "action": tool + canonical args; "state": state hash after the step
    fork: str = "decision"  # "decision": forks scored at writes and stops, lookups as context; "raw": every step
    ignore_read_only: bool = False
    include_user: bool = False  # ask_user turns as keys
    include_model: bool = False  # model turns as keys (keyed by a digest of their output)
    pool_variants: bool = False  # also pool trials on perturbed input variants (default: base inputs only)
    collapse_repeats: bool = True  # drop a read-only step repeating the previous key
    alpha: float = 0.05  # false-discovery rate (Benjamini–Hochberg over the suite's tested nodes)
    min_support: int = 4  # fewest trials through a node for it to be tested
    test: str = "boschloo"  # two alternatives: "boschloo" (more powerful at small k) or "fisher"
    boschloo_max_n: int = 128  # Boschloo for nodes with at most this many trials; Fisher above
    permutations: int = 10_000  # Monte-Carlo permutations when exact enumeration is too large
    seed: int = 0
    max_branches: int = 5  # branch nodes listed per task (best first)
    max_trials_listed: int = 100  # per-trial rows listed per task (failed trials first)

    def __post_init__(self) -> None:
        if self.key not in ("action", "state"):
            raise ValueError(f"key must be 'action' or 'state', got {self.key!r}")
        if self.fork not in ("decision", "raw"):
            raise ValueError(f"fork must be 'decision' or 'raw', got {self.fork!r}")
        if self.test not in ("fisher", "boschloo"):
            raise ValueError(f"test must be 'fisher' or 'boschloo', got {self.test!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_support < 2:
            raise ValueError(f"min_support must be at least 2, got {self.min_support}")
        if self.permutations < 100:
            raise ValueError(f"permutations must be at least 100, got {self.permutations}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrialPath:
    """One trial, already keyed. `steps[i]` is the position in the trial's logged events of
    the step behind `keys[i]` (for showing its details); `milestones` maps a milestone name to
    the tool-call index at which it was reached (or None)."""

    trial: str
    success: bool
    keys: list[str]
    steps: list[int] | None = None
    milestones: dict[str, int | None] | None = None
    tool_calls: int | None = None
    read_only: list[bool] | None = None  # per key: a lookup (fork="decision": dropped when a write follows); None: none


@dataclass
class TaskTrials:
    task: str
    trials: list[TrialPath]
    reference: list[str] | None = None  # the reference actions, keyed like the trials
    milestones: list[str] = field(default_factory=list)  # milestone names, in task order
