"""A sequential design: trials in rounds, each task stopping once its answer is known.

`trajbench run -k K_MIN --k-max N --until TARGET` gives every task K_MIN trials, then (round by
round) more trials to the tasks a stopping rule has not settled, up to N. The rounds' sizes
are fixed in advance (`Design.schedule`: doubling K_MIN, 2·K_MIN, 4·K_MIN, ... or fixed
batches of `round_size`), so the only thing the data decide is WHICH tasks get the next round.

`walk` is the one place that turns a design, its stopping rule and the outcomes logged so far
into the rounds that were decided and the trials still owed. The runner calls it to know what
to run next (and so a resumed run continues the same design: the decision after a round reads
only the trials of indices below that round's n, which a resume reproduces exactly);
`trajbench verify` calls it on the replayed outcomes to check the recorded design. The rule
itself (the statistics) is the analysis layer's (`bench.analysis.stopping`); it is handed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from bench.errors import BenchError

# outcome of each trial index of a task ("success", "failure", "error"; None: not run yet)
Outcomes = Mapping[str, Sequence[str | None]]
# rule(outcomes of every task, truncated to its trials so far; the active tasks; this round's n)
#   -> {task: why it stops now}; tasks left out keep going
StopRule = Callable[[Mapping[str, Sequence[str]], Sequence[str], int], dict[str, str]]

TARGETS = ("pass1", "task", "gate")


@dataclass(frozen=True)
class Design:
    """What `--k-max/--until` asked for; recorded in the manifest as `design`."""

    k_min: int
    k_max: int
    until: str  # "pass1:W", "task:W" or "gate"
    alpha: float = 0.05
    round_size: int | None = None  # None: doubling
    baseline: dict[str, Any] | None = field(default=None)  # {"dir", "run_id"} for until=gate

    def __post_init__(self) -> None:
        if not 1 <= self.k_min <= self.k_max:
            raise BenchError(f"--k-max ({self.k_max}) must be at least -k ({self.k_min})", field="--k-max")
        if parse_until(self.until)[0] == "gate" and not self.baseline:
            raise BenchError("--until gate needs --baseline RUN_DIR", field="--until")

    @property
    def target(self) -> tuple[str, float | None]:
        return parse_until(self.until)

    def schedule(self) -> list[int]:
        """Each round's trials per active task, cumulative: ends at k_max."""
        out, n = [], self.k_min
        while n < self.k_max:
            out.append(n)
            n = n + self.round_size if self.round_size else 2 * n
        return out + [self.k_max]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "schedule": self.schedule()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Design":
        try:
            return cls(int(data["k_min"]), int(data["k_max"]), str(data["until"]), float(data.get("alpha", 0.05)),
                       data.get("round_size"), data.get("baseline"))
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchError(f"the manifest's design is not readable ({exc})", field="design") from None


def parse_until(text: str) -> tuple[str, float | None]:
    """`pass1:W` (suite pass@1 half-width ≤ W), `task:W` (every task's pass@1 interval narrower
    than W) or `gate` (the sequential regression gate against --baseline decided)."""
    target, _, value = text.partition(":")
    if target == "gate" and not value:
        return "gate", None
    if target in ("pass1", "task") and value:
        try:
            width = float(value)
        except ValueError:
            width = -1.0
        if 0 < width < 1:
            return target, width
    raise BenchError(f"--until must be pass1:W, task:W (0 < W < 1) or gate, not {text!r}", field="--until")


@dataclass
class Progress:
    """The decided rounds, each task's trials so far under the design, and the trials still owed."""

    rounds: list[dict[str, Any]]
    per_task_n: dict[str, int]
    stopped: dict[str, str]
    owed: dict[str, list[int]]

    @property
    def finished(self) -> bool:
        return not self.owed

    def as_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "per_task_n": self.per_task_n, "stopped": self.stopped, "finished": self.finished}


def walk(design: Design, rule: StopRule, tasks: Sequence[str], outcomes: Outcomes) -> Progress:
    """Replay the design over the outcomes logged so far. Round by round: if every active task
    has all trials of indices below the round's n, the rule decides which tasks stop (at
    k_max, all do); otherwise the round is in progress and its missing trials are owed. The
    rule sees each task's trials truncated to its own n, never a trial beyond the round."""
    active, per_task_n = list(tasks), {t: 0 for t in tasks}
    rounds: list[dict[str, Any]] = []
    stopped: dict[str, str] = {}
    for n in design.schedule():
        owed = {t: [i for i in range(n) if _outcome(outcomes, t, i) is None] for t in active}
        owed = {t: idx for t, idx in owed.items() if idx}
        for t in active:
            per_task_n[t] = n
        if owed:
            return Progress(rounds, per_task_n, stopped, owed)
        seen = {t: [str(_outcome(outcomes, t, i)) for i in range(per_task_n[t])] for t in tasks}
        now = {t: "k_max" for t in active} if n >= design.k_max else rule(seen, active, n)
        rounds.append({"n": n, "tasks": len(active), "stopped": len(now)})
        stopped.update(now)
        active = [t for t in active if t not in now]
        if not active:
            break
    return Progress(rounds, per_task_n, stopped, {})


def _outcome(outcomes: Outcomes, task: str, index: int) -> str | None:
    row = outcomes.get(task) or ()
    return row[index] if index < len(row) else None


def outcomes_of(summaries: Iterable[Mapping[str, Any]]) -> dict[str, list[str | None]]:
    """Trial outcomes by task and index, on the unperturbed input (the design's population);
    `summaries` may be a run's lazy `SummaryIndex.values()`: one summary in memory at a time."""
    out: dict[str, list[str | None]] = {}
    for s in summaries:
        index = s.get("index")
        if not isinstance(index, int) or index < 0 or s.get("variant_family", "base") != "base":
            continue
        row = out.setdefault(str(s["task"]), [])
        row.extend([None] * (index + 1 - len(row)))
        row[index] = str(s.get("outcome"))
    return out
