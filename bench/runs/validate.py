"""`trajbench validate`: a suite's tasks are well-formed and their goals are meaningful.

For every task: the schema holds; every reference action runs without error; the reference
agent passes; the do-nothing agent fails unless the task says `noop_passes` (and passes if it
says so); state paths lead somewhere; read-only tools do not write; and the reference still
passes on every input variant (two seeds of each perturbation family).
"""

from __future__ import annotations

from bench.adapters.builtin import NoopAgent, ReferenceAgent
from bench.canonical import state_hash
from bench.episode import Episode
from bench.runs.trial import play
from bench.world.goal import _MISSING, path_label, path_parts, resolve
from bench.world.suite import Suite
from bench.world.task import Problem
from bench.world.user import ScriptedUser
from bench.world.variants import FAMILIES, VariantSpec, variants_of


def _discard(event: dict) -> None:
    pass


def run_offline(suite: Suite, task, agent, max_steps: int = 200) -> dict:
    episode = Episode(suite, task, trial_id=f"{task.id}/{agent.name}", attempt="validate", seed=0,
                      max_steps=max_steps, timeout_s=None, sink=_discard)
    return play(agent, episode)


def validate_suite(suite: Suite) -> list[Problem]:
    problems = list(suite.problems)
    for task in suite.tasks:
        _, ref_errors = suite.expected_state(task)
        for err in ref_errors:
            problems.append(Problem(task.source, task.id, f"field {err}"))
        if ref_errors:
            continue
        for path in _unknown_paths(suite, task):
            problems.append(Problem(task.source, task.id, f"field state_check: path {path!r} is not in the expected state"))
        for i, question in _unanswered_questions(task):
            problems.append(Problem(task.source, task.id, f"field reference_actions.{i}: the scripted user reveals no fact for {question!r} (no word of a user_facts key in it)"))
        for field_name, path in _dangling_paths(suite, task):
            problems.append(Problem(task.source, task.id, f"field {field_name}: path {path!r} leads nowhere in the initial or expected state (a typo never triggers)"))
        for i, tool in _writing_reads(suite, task):
            problems.append(Problem(task.source, task.id, f"field reference_actions.{i}: tool {tool} is flagged read-only but changed the state"))
        ref = run_offline(suite, task, ReferenceAgent())
        if ref["outcome"] != "success":
            problems.append(Problem(task.source, task.id, f"the reference agent fails its own goal ({ref['reason']})"))
        for name, step in ref["milestones"].items():
            if step is None:
                problems.append(Problem(task.source, task.id, f"field milestones: the reference never reaches milestone {name!r}"))
        problems += _variant_problems(suite, task)
        noop = run_offline(suite, task, NoopAgent())
        if noop["outcome"] == "success" and not task.noop_passes:
            problems.append(Problem(task.source, task.id, "a do-nothing agent passes this task; fix the goal or set noop_passes: true"))
        if noop["outcome"] != "success" and task.noop_passes:
            problems.append(Problem(task.source, task.id, f"field noop_passes: is true but a do-nothing agent fails ({noop['reason']})"))
    return problems


def _unknown_paths(suite: Suite, task) -> list[str]:
    if not isinstance(task.state_check, dict):
        return []
    expected, _ = suite.expected_state(task)
    initial = suite.initial_state_for(task)
    paths = [*task.state_check.get("include", ()), *task.state_check.get("exclude", ())]
    return [path_label(p) for p in paths if resolve(expected, p) is _MISSING and resolve(initial, p) is _MISSING]


VALIDATED_VARIANTS = VariantSpec({family: {} for family in FAMILIES}, per_family=2)


def _variant_problems(suite: Suite, task) -> list[Problem]:
    """No input variant may change the goal: the reference (which, for a dropped fact, first
    asks the user for it) must still pass on every variant."""
    problems = []
    for variant in variants_of(task, VALIDATED_VARIANTS, base_seed=0)[1:]:
        for _, question in _unanswered_questions(variant.task):
            problems.append(Problem(task.source, task.id, f"variant {variant.id}: the user cannot answer {question!r}"))
        result = run_offline(suite, variant.task, ReferenceAgent())
        if result["outcome"] != "success":
            problems.append(Problem(task.source, task.id, f"variant {variant.id} changes the goal: the reference fails ({result['reason']})"))
    return problems


def _dangling_paths(suite: Suite, task) -> list[tuple[str, str]]:
    """State predicates whose path's parent exists in neither the initial nor the expected
    state: almost always a typo, and a typo in a forbidden rule silently never fires."""
    expected, _ = suite.expected_state(task)
    initial = suite.initial_state_for(task)
    found = []
    predicates = [(f"assertions.{i}", a) for i, a in enumerate(task.assertions)]
    predicates += [(f"forbidden.{i}.state", r["state"]) for i, r in enumerate(task.forbidden) if "state" in r]
    predicates += [(f"milestones.{i}.state", m["state"]) for i, m in enumerate(task.milestones) if "state" in m]
    for field_name, predicate in predicates:
        parent = path_parts(predicate["path"])[:-1]
        if parent and resolve(initial, parent) is _MISSING and resolve(expected, parent) is _MISSING:
            found.append((field_name, path_label(predicate["path"])))
    return found


def _writing_reads(suite: Suite, task) -> list[tuple[int, str]]:
    """Read-only tools are trusted not to change the state (its hash is not recomputed after
    them): check that on the reference."""
    world = suite.new_world(task)
    found = []
    for i, action in enumerate(task.reference_actions):
        tool = suite.tools.get(action.tool)
        if tool is None:
            continue
        before = state_hash(world.state)
        world.execute(action.tool, action.args)
        if tool.read_only and state_hash(world.state) != before:
            found.append((i, action.tool))
    return found


def _unanswered_questions(task) -> list[tuple[int, str]]:
    user = ScriptedUser(task.user_facts)
    return [(i, a.args.get("question", "")) for i, a in enumerate(task.reference_actions)
            if a.tool == "ask_user" and not user.reveals(a.args.get("question", ""))]
