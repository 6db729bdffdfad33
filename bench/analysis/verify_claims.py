"""What `trajbench verify` reports and the claims it checks about a run as a whole (the
counterpart of `bench.analysis.replay`, which replays each trial): the `Mismatch` record and its
wording, completeness (every task × input variant × k trial present exactly once) and the figures
(`trajbench report`'s figures from the logged outcomes against the same figures from the
replayed ones)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.analysis import metrics
from bench.analysis.report import build_report
from bench.runs.rundir import VALID_OUTCOMES, Manifest, RunLog, variant_family
from bench.world.variants import BASE, Variant


@dataclass(frozen=True)
class Mismatch:
    """One difference between the log and the replay. `trial`/`step` are None for run-level
    problems; `field` names what differs (observation, state_hash, outcome, completeness...)."""

    trial: str | None
    step: int | None
    field: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "step": self.step, "field": self.field, "detail": self.detail}

    def __str__(self) -> str:
        where = []
        if self.trial is not None:
            where.append(f"trial {self.trial}")
        if self.step is not None:
            where.append(f"step {self.step}")
        prefix = ", ".join(where) or "run"
        return f"{prefix}: {self.field}: {self.detail}"


# ------------------------------------------------------------------------------ helpers
def shorten(text: str, width: int = 120) -> str:
    """Cut a message part to `width` characters (escaping is the renderers' job)."""
    return text if len(text) <= width else text[: width - 1] + "…"


def show_value(value: Any, width: int = 100) -> str:
    """A logged value, short, for a mismatch message."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        text = repr(value)
    return shorten(text, width)


def differs(what: str, logged: Any, replayed: Any) -> str:
    return f"the log has {show_value(logged)}, the replay gives {show_value(replayed)}"


def as_number(value: Any) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def same_number(a: Any, b: Any) -> bool:
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def check_completeness(log: RunLog, manifest: Manifest, variants: dict[str, dict[str, Variant]], out: list[Mismatch],
                        design_n: dict[str, int] | None = None) -> None:
    k = manifest.get("k")
    tasks = manifest.get("tasks") or []
    if not isinstance(k, int):
        out.append(Mismatch(None, None, "k", f"the manifest's k is not a whole number ({show_value(k)})"))
        return
    per_task = design_n if design_n is not None else {t: k for t in tasks}
    expected = [f"{t}/{v}/{i}" for t in tasks for v in variants.get(t, {"base": None}) for i in range(per_task.get(t, 0))]
    present = set(log.summaries)
    for trial in expected:
        if trial not in present:
            out.append(Mismatch(trial, None, "completeness", "no summary: the trial is missing (an unfinished run resumes with the same command)"))
    wanted = set(expected)
    for trial in sorted(present - wanted):
        out.append(Mismatch(trial, None, "completeness", "a trial that the run's tasks, variants and k do not call for"))
    for trial, times in sorted(Counter(log.duplicate_summaries).items()):
        out.append(Mismatch(trial, None, "duplicate", f"the trial has {times + 1} summary records; exactly one is allowed"))


def _check_arms(log: RunLog, arms: list[dict[str, Any]], replayed: dict[str, str | None], out: list[Mismatch]) -> None:
    """Each arm's successes as the report gives them from the log, against the replayed outcomes."""
    now: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for trial, summary in log.summaries.items():
        if replayed.get(trial) in VALID_OUTCOMES:
            cell = now[str(summary.get("variant"))]
            cell[0] += 1
            cell[1] += replayed.get(trial) == "success"
    for arm in arms:
        was, got = [arm["n"], arm["successes"]], now.get(arm["variant"], [0, 0])
        if was != got:
            out.append(Mismatch(None, None, "metrics", f"replay arm {arm['variant']} ({arm['role']}): the log scores "
                                f"{was[1]}/{was[0]} successes, the replay {got[1]}/{got[0]}"))


def check_metrics(run_dir: Path, log: RunLog, replayed: dict[str, str | None], out: list[Mismatch]) -> None:
    """The figures `trajbench report` computes from the logged outcomes against the same figures
    from the replayed outcomes (suite means; intervals follow from the same per-task counts)."""
    try:
        report = build_report(run_dir, bootstrap=1, index=False)  # from the log itself: verify trusts no derived file
    except Exception as exc:  # noqa: BLE001 - a hostile log must give a mismatch, never a traceback
        out.append(Mismatch(None, None, "metrics", f"`trajbench report` cannot compute the run's figures from this log "
                            f"({type(exc).__name__}: {shorten(str(exc))})"))
        return
    if "replay" in report:  # a replay's report claims its arms' counts (bench.analysis.report.replay_report)
        _check_arms(log, report["replay"]["arms"], replayed, out)
        return
    logged_rows = {r["task"]: (r["n"], r["successes"]) for r in report["tasks"]}
    logged: dict[tuple[str, Any], list[int]] = defaultdict(lambda: [0, 0])
    replay: dict[tuple[str, Any], list[int]] = defaultdict(lambda: [0, 0])
    for trial, summary in log.summaries.items():
        family = str(variant_family(summary))
        for table, outcome in ((logged, summary.get("outcome")), (replay, replayed.get(trial))):
            if outcome in VALID_OUTCOMES:
                task = summary.get("task")
                cell = table[(family, task if isinstance(task, str) else repr(task))]
                cell[0] += 1
                cell[1] += outcome == "success"
    for key in sorted(set(logged) | set(replay), key=str):
        family, task = key
        was, now = logged.get(key, [0, 0]), replay.get(key, [0, 0])
        if family == BASE:
            was = list(logged_rows.get(task, (0, 0)))  # what `trajbench report` scores
        if was != now:
            where = f"task {task}" if family == BASE else f"task {task}, input variant family {family}"
            out.append(Mismatch(None, None, "metrics", f"{where}: the log scores {was[1]}/{was[0]} successes, the replay {now[1]}/{now[0]}"))
    counts = {task: cell for (family, task), cell in replay.items() if family == BASE}
    pairs = [(n, c) for n, c in counts.values()]
    replay_suite = metrics.suite_summary(pairs, B=1)
    claimed = report["suite"]
    figures = [("pass@1", claimed["pass@1"]["mean"], replay_suite["pass@1"]["mean"]),
               ("flip", claimed["flip"]["mean"], replay_suite["flip"]["mean"])]
    for name in ("pass^k", "pass@k"):
        mine = {e["k"]: e["mean"] for e in replay_suite[name]}
        for entry in claimed[name][1:]:  # k = 1 is pass@1
            figures.append((name.replace("k", str(entry["k"])), entry["mean"], mine.get(entry["k"])))
    for name, was, now in figures:
        if not same_number(was, now):
            out.append(Mismatch(None, None, "metrics", f"{name}: the log claims {_fmt(was)}, the replay gives {_fmt(now)}"))


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"
