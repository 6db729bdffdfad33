"""Simulated agents of known reliability, for calibrating the scorers and for demos.

A sim agent follows the task's reference actions. With the probability of failure that its
spec fixes, it instead executes a *verified-fatal* corruption of the reference: a wrong argument,
a skipped step, an extra step, a wrong tool or an early stop. Every candidate corruption is
dry-run on a fresh world and kept only if the goal check really fails, so the agent's true
per-task success probability is exactly known (and recorded in each trial summary). Harmless
noise (repeated read-only calls, verified not to change the outcome) adds trajectory variance
without changing outcomes.

Reliability, per task: `p=0.7` (fixed), `p=0.2..0.95` (each task gets its own p, spread
deterministically over the range by task id), or `step_error=0.05` (each reference step fails
independently: p = (1 − e)^L for L reference actions). A task with no fatal corruption at all
(rare: its goal is satisfied however the reference is corrupted) has true p = 1.

Planted divergence (to validate the divergence analysis against ground truth):
`plant_step=s&plant_q=q&plant_f=f`. At reference step s (0-based), with probability q, the
agent takes one specific alternative action instead of the reference's (the first verified-fatal
substitution at s: a wrong argument, else a wrong tool, a skipped step or an early stop). Having
taken it, it fails with probability f (it carries on with the rest of the reference, which fails);
otherwise it recovers (it then performs the reference step after all, and succeeds). When no
alternative at s can be recovered from, the failure probability is 1 whatever f says; the
annotations record the effective value. Trials that do not take the alternative behave as
without planting (so `p`, `step_error` and `noise` add background variation). A task with
fewer than s + 1 reference actions is not planted. The true success probability becomes
(1 − q) p + q (1 − f).

These agents are never presented as real agents: reports label them `simulated`.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from bench.canonical import canonical_json, derive_seed, step_key
from bench.episode import Episode
from bench.errors import BenchError
from bench.world.goal import LoggedAction, evaluate
from bench.world.suite import Suite
from bench.world.task import Action, Task
from bench.world.tools import World

MODES = ("wrong_arg", "skip", "extra", "wrong_tool", "early_stop")
PLANT_MODES = ("wrong_arg", "wrong_tool", "skip", "early_stop")  # substitutions at the step, by preference
RESUME_DRAWS = 10_000  # plan draws a resumed sim agent makes to find one that begins with the prefix


@dataclass(frozen=True)
class Planted:
    """The planted branch of one task: the alternative at `step` and its two continuations."""

    step: int
    alternative: Action | None  # None: the alternative is to stop
    mode: str
    fail: Plan
    recover: Plan | None
    f: float  # effective probability of failing after the alternative


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    answer: str
    mode: str | None = None
    step: int | None = None


class SimAgent:
    """`sim:oracle` (p = 1) and `sim:noisy?...` (see module docstring)."""
    thread_stateless = True  # it keeps nothing per thread: its trials may reuse threads (bench/runs/trial.py)

    def __init__(self, name: str = "sim", p: Any = None, step_error: float | None = None,
                 modes: Any = MODES, noise: float = 0.0, plant_step: Any = None, plant_q: Any = None,
                 plant_f: Any = None, family_p: Any = None):
        self.name = name
        self.family_p = _parse_family_p(family_p)
        self.modes = _parse_modes(modes)
        self.noise = float(noise)
        self.p_range = _parse_p(p) if p is not None else None
        self.step_error = None if step_error is None else float(step_error)
        if self.p_range is not None and self.step_error is not None:
            raise BenchError("a sim agent takes either p or step_error, not both", field="options")
        if self.step_error is not None and not 0 <= self.step_error <= 1:
            raise BenchError(f"step_error must be in [0, 1], got {self.step_error}", field="options.step_error")
        if not 0 <= self.noise <= 1:
            raise BenchError(f"noise must be in [0, 1], got {self.noise}", field="options.noise")
        self.plant = _parse_plant(plant_step, plant_q, plant_f)
        self._plant_cache: dict[str, Planted | None] = {}
        self._fatal_cache: dict[str, list[Plan]] = {}
        self._lock = threading.Lock()

    # -- ground truth ------------------------------------------------------------------
    def nominal_p(self, task: Task, family: str = "base") -> float:
        if family in self.family_p:
            return self.family_p[family]
        if self.step_error is not None:
            return (1.0 - self.step_error) ** max(1, len(task.reference_actions))
        if self.p_range is None:
            return 1.0
        lo, hi = self.p_range
        u = (derive_seed("sim-p", task.id) % 1_000_003) / 1_000_002
        return lo + (hi - lo) * u

    def background_p(self, suite: Suite, task: Task, family: str = "base") -> float:
        """Success probability without planting."""
        nominal = self.nominal_p(task, family)
        return nominal if nominal == 1.0 or self.fatal_plans(suite, task) else 1.0

    def true_p(self, suite: Suite, task: Task, family: str = "base") -> float:
        background = self.background_p(suite, task, family)
        planted = self.planted(suite, task)
        if planted is None:
            return background
        q = self.plant[1]  # type: ignore[index]
        return (1 - q) * background + q * (1 - planted.f)

    # -- acting ------------------------------------------------------------------------
    def run(self, episode: Episode) -> str:
        suite, task = episode.privileged_task()
        plan, facts = self._draw(suite, task, episode.variant, random.Random(episode.seed))
        episode.annotations["sim"] = facts
        for action in plan.actions:
            episode.call(action.tool, action.args)
        return plan.answer

    def resume(self, episode: Episode, prefix: Sequence[str]) -> str:
        """Continue from a restored prefix (`prefix`: the step keys already taken, see
        `bench.analysis.prefix`): draw plans with the episode's fresh seed until one begins with
        the prefix, and carry out the rest of it — a draw from the agent's continuation
        distribution given the prefix (its choices are all visible in the steps taken)."""
        suite, task = episode.privileged_task()
        rng = random.Random(episode.seed)
        want = list(prefix)
        for _ in range(RESUME_DRAWS):
            plan, facts = self._draw(suite, task, episode.variant, rng)
            if [step_key(a.tool, a.args) for a in plan.actions[:len(want)]] == want:
                episode.annotations["sim"] = facts
                for action in plan.actions[len(want):]:
                    episode.call(action.tool, action.args)
                return plan.answer
        raise BenchError(f"sim agent {self.name!r}: none of {RESUME_DRAWS} draws of its plans for task {task.id!r} "
                         f"begins with the {len(want)} restored steps, so it cannot continue from there")

    def _draw(self, suite: Suite, task: Task, variant: str, rng: random.Random) -> tuple[Plan, dict[str, Any]]:
        """One trial's plan and the ground-truth facts recorded with it."""
        truth = self.true_p(suite, task, variant)
        reference = Plan(task.reference_actions, task.answer_for_reference)
        planted = self.planted(suite, task)
        took = recovered = False
        if planted is not None and rng.random() < self.plant[1]:  # type: ignore[index]
            took = True
            recovered = planted.recover is not None and rng.random() >= planted.f
            plan = planted.recover if recovered else planted.fail  # type: ignore[assignment]
        else:
            background = self.background_p(suite, task, variant) if planted is not None else truth
            plan = reference if rng.random() < background else self._choose_fatal(suite, task, rng)
        plan = self._with_noise(suite, task, plan, rng)
        facts: dict[str, Any] = {"true_p": truth, "intended": "success" if plan.mode is None else "failure",
                                 "mode": plan.mode, "step": plan.step}
        if planted is not None:
            alt = planted.alternative
            facts["plant"] = {
                "step": planted.step, "mode": planted.mode, "f": planted.f, "taken": took,
                "recovered": recovered,
                "alternative": None if alt is None else {"tool": alt.tool, "args": alt.args}}
        return plan, facts

    def _choose_fatal(self, suite: Suite, task: Task, rng: random.Random) -> Plan:
        plans = self.fatal_plans(suite, task)
        if self.step_error is not None:
            steps = sorted({p.step for p in plans})
            weights = [(1 - self.step_error) ** s for s in steps]  # earlier steps are reached more often
            step = rng.choices(steps, weights)[0]
            plans = [p for p in plans if p.step == step]
        else:
            modes = sorted({p.mode for p in plans})
            mode = rng.choice(modes)
            plans = [p for p in plans if p.mode == mode]
        return rng.choice(plans)

    def _with_noise(self, suite: Suite, task: Task, plan: Plan, rng: random.Random) -> Plan:
        if self.noise <= 0:
            return plan
        actions: list[Action] = []
        for action in plan.actions:
            actions.append(action)
            tool = suite.tools.get(action.tool)
            if tool is not None and tool.read_only and rng.random() < self.noise:
                actions.append(action)  # a repeated read: changes the trajectory, not the state
        noisy = Plan(tuple(actions), plan.answer, plan.mode, plan.step)
        return noisy if _succeeds(suite, task, noisy) == (plan.mode is None) else plan

    def planted(self, suite: Suite, task: Task) -> Planted | None:
        """The task's planted branch (None without planting or when the task is too short)."""
        if self.plant is None:
            return None
        with self._lock:
            key = _plan_key(task)
            if key not in self._plant_cache:
                self._plant_cache[key] = _make_plant(suite, task, *self.plant)
            return self._plant_cache[key]

    def fatal_plans(self, suite: Suite, task: Task) -> list[Plan]:
        """Every corruption of the reference, in a fixed order, that really fails the task."""
        with self._lock:
            key = _plan_key(task)
            if key not in self._fatal_cache:
                candidates = _corruptions(suite, task, self.modes)
                self._fatal_cache[key] = [p for p in candidates if not _succeeds(suite, task, p)]
            return self._fatal_cache[key]


def _parse_plant(step: Any, q: Any, f: Any) -> tuple[int, float, float] | None:
    if step is None and q is None and f is None:
        return None
    if step is None:
        raise BenchError("planting a divergence needs plant_step (the 0-based reference step)", field="options.plant_step")
    text = str(step).strip()
    if isinstance(step, bool) or not text.isdigit():
        raise BenchError(f"plant_step must be a whole number ≥ 0, got {step!r}", field="options.plant_step")
    step_i = int(text)
    values = []
    for key, value, default in (("plant_q", q, 0.5), ("plant_f", f, 1.0)):
        try:
            x = default if value is None else float(value)
        except (TypeError, ValueError):
            raise BenchError(f"{key} must be a number in [0, 1], got {value!r}", field=f"options.{key}") from None
        if not 0 <= x <= 1:
            raise BenchError(f"{key} must be in [0, 1], got {value!r}", field=f"options.{key}")
        values.append(x)
    return step_i, values[0], values[1]


def _make_plant(suite: Suite, task: Task, step: int, q: float, f: float) -> Planted | None:
    """The first fatal substitution at `step` (by PLANT_MODES preference), preferring one that
    can be recovered from (alternative, then the reference step, then the rest succeeds)."""
    ref = list(task.reference_actions)
    if step >= len(ref):
        return None
    answer = task.answer_for_reference
    fatal = [p for p in _corruptions(suite, task, PLANT_MODES)
             if p.step == step and p.mode != "extra" and not _succeeds(suite, task, p)]
    fatal.sort(key=lambda p: PLANT_MODES.index(p.mode or ""))
    if not fatal:
        return None
    chosen: tuple[Plan, Plan | None] | None = None
    for plan in fatal:
        if plan.mode == "early_stop":
            continue
        alt = plan.actions[step]
        recover = Plan(tuple(ref[:step] + [alt] + ref[step:]), answer, None, step)
        if _succeeds(suite, task, recover):
            chosen = (plan, recover)
            break
    if chosen is None:
        chosen = (fatal[0], None)
    plan, recover = chosen
    alternative = None if plan.mode == "early_stop" else plan.actions[step]
    return Planted(step, alternative, plan.mode or "", plan, recover, f if recover is not None else 1.0)


def _plan_key(task: Task) -> str:
    """Plans are cached per task *as presented*: a `drop` variant's reference starts with an
    extra ask_user step, so it gets its own plans."""
    return task.id + "|" + canonical_json([a.as_dict() for a in task.reference_actions])


def _parse_family_p(spec: Any) -> dict[str, float]:
    """`typos:0.5,drop:0.3`: the success probability on inputs of those variant families (to
    plant an input-variance effect of known size)."""
    if not spec:
        return {}
    if isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        pairs = [part.partition(":")[::2] for part in str(spec).split(",") if part.strip()]
    out = {}
    for family, value in pairs:
        try:
            out[family.strip()] = float(value)
        except ValueError:
            raise BenchError(f"family_p takes FAMILY:P pairs, got {spec!r}", field="options.family_p") from None
        if not 0 <= out[family.strip()] <= 1:
            raise BenchError(f"family_p values must lie in [0, 1], got {value}", field="options.family_p")
    return out


def _parse_modes(modes: Any) -> tuple[str, ...]:
    if isinstance(modes, str):
        modes = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise BenchError(f"unknown sim error mode(s) {unknown}; choose from {', '.join(MODES)}", field="options.modes")
    return tuple(modes)


def _parse_p(p: Any) -> tuple[float, float]:
    try:
        if isinstance(p, str) and ".." in p:
            lo, hi = (float(x) for x in p.split(".."))
        else:
            lo = hi = float(p)
    except ValueError:
        raise BenchError(f"p must be a number or a range like 0.2..0.95, got {p!r}", field="options.p") from None
    if not 0 <= lo <= hi <= 1:
        raise BenchError(f"p must lie in [0, 1] with low ≤ high, got {p!r}", field="options.p")
    return lo, hi


def _succeeds(suite: Suite, task: Task, plan: Plan) -> bool:
    world = World(suite.tools, suite.initial_state_for(task))
    logged = []
    for i, action in enumerate(plan.actions):
        if action.tool == "ask_user":
            continue
        outcome = world.execute(action.tool, action.args)
        logged.append(LoggedAction(i, action.tool, action.args, outcome.error))
    expected, _ = suite.expected_state(task)
    checks = evaluate(task, world.state, expected, logged, plan.answer)
    return all(c["passed"] for c in checks.values())


def _corruptions(suite: Suite, task: Task, modes: tuple[str, ...]) -> list[Plan]:
    ref = list(task.reference_actions)
    answer = task.answer_for_reference
    rng = random.Random(derive_seed("sim-corrupt", task.id))
    out: list[Plan] = []
    write_tools = [t.name for t in suite.tools if not t.read_only]
    for j, action in enumerate(ref):
        if "early_stop" in modes:
            out.append(Plan(tuple(ref[:j]), "", "early_stop", j))
        if action.tool == "ask_user":
            continue
        if "skip" in modes:
            out.append(Plan(tuple(ref[:j] + ref[j + 1:]), answer, "skip", j))
        if "wrong_arg" in modes:
            for args in _wrong_args(suite, task, action, rng):
                out.append(Plan(tuple(ref[:j] + [Action(action.tool, args)] + ref[j + 1:]), answer, "wrong_arg", j))
        if "wrong_tool" in modes:
            for name in _compatible_tools(suite, action):
                out.append(Plan(tuple(ref[:j] + [Action(name, action.args)] + ref[j + 1:]), answer, "wrong_tool", j))
        if "extra" in modes:
            for name in write_tools:
                tool = suite.tools[name]
                if set(tool.parameters.get("required", ())) <= set(action.args):
                    extra = Action(name, {k: v for k, v in action.args.items() if k in tool.parameters["properties"]})
                    out.append(Plan(tuple(ref[:j + 1] + [extra] + ref[j + 1:]), answer, "extra", j))
    if not ref and "early_stop" in modes:
        out.append(Plan((), "", "early_stop", 0))
    return out


def _wrong_args(suite: Suite, task: Task, action: Action, rng: random.Random) -> list[dict[str, Any]]:
    """Plausible wrong values: another key of the same table (another order id), a shifted
    number, a changed string."""
    state = suite.initial_state_for(task)
    variants = []
    for key, value in sorted(action.args.items()):
        if isinstance(value, bool):
            new: Any = not value
        elif isinstance(value, (int, float)):
            new = value + 1 if isinstance(value, int) else round(value * 1.5 + 1, 2)
        elif isinstance(value, str):
            siblings = _sibling_keys(state, value)
            new = rng.choice(siblings) if siblings else value + "x"
        else:
            continue
        variants.append({**action.args, key: new})
    return variants


def _sibling_keys(state: Any, value: str) -> list[str]:
    if isinstance(state, dict):
        if value in state:
            return sorted(k for k in state if k != value and not k.startswith("_"))
        for child in state.values():
            found = _sibling_keys(child, value)
            if found:
                return found
    return []


def _compatible_tools(suite: Suite, action: Action) -> list[str]:
    names = []
    for tool in suite.tools:
        props = tool.parameters.get("properties", {})
        if tool.name != action.tool and set(action.args) <= set(props) and set(tool.parameters.get("required", ())) <= set(action.args):
            names.append(tool.name)
    return names
