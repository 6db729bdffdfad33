"""`trajbench validate`: a suite's tasks are well-formed and their goals are meaningful.

For every task: the schema holds; every reference action runs without error; the reference
agent passes; the do-nothing agent fails unless the task says `noop_passes` (and passes if it
says so); state paths lead somewhere; read-only tools do not write; and the reference still
passes on every input variant (two seeds of each perturbation family).

And the domain's contract, on which verify, divergence keys and state pooling all rest:

- **determinism**: the reference replayed twice in this process, and in subprocesses with
  other hash seeds (`PYTHONHASHSEED`: the iteration order of sets of strings), gives the same
  observation, error and state hash at every step; a tool using `random`, the clock or set
  order is named with its step. (A set of two strings keeps its order under a new seed half the
  time: the subprocesses use several seeds, so a tiny set can still slip through.)
- **created ids**: a record a tool creates never overwrites one the task's data already holds.
  The reference is replayed on a state seeded with a decoy at every id it created; a tool that
  writes over a decoy (or refuses to create because its id is taken) does not skip seeded ids
  (`bench.world.tools.new_id` does).
- `ask_user` calls never reach action milestones, so a milestone on `ask_user` is an error.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from bench.adapters.builtin import NoopAgent, ReferenceAgent
from bench.canonical import digest, state_hash
from bench.episode import Episode
from bench.runs.trial import play
from bench.world.goal import _MISSING, path_label, path_parts, resolve
from bench.world.suite import Suite
from bench.world.task import Problem, Task
from bench.world.tools import World
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
    problems += _contract_problems(suite)
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
        for i, milestone in enumerate(task.milestones):
            action = milestone.get("action") if isinstance(milestone, dict) else None
            if isinstance(action, dict) and action.get("tool") == "ask_user":
                problems.append(Problem(task.source, task.id, f"field milestones.{i}.action: a milestone on ask_user is never "
                                        "reached (ask_user calls do not reach action milestones); use a state milestone"))
        for i, tool, key in _colliding_ids(suite, task):
            problems.append(Problem(task.source, task.id, f"field reference_actions.{i}: tool {tool} created id {key!r}, which a "
                                    "record of the task's data already holds: ids created by tools must skip the ids in the "
                                    "state (use bench.world.tools.new_id)"))
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


# ------------------------------------------------------------------------------ the domain contract
HASH_SEEDS = ("1", "2", "3")  # PYTHONHASHSEED of the subprocesses (the parent's is its own)
# the domain may print: its output goes to stderr, the traces alone to stdout
_TRACE_PROGRAM = ("import sys, orjson; out = sys.stdout.buffer; sys.stdout = sys.stderr; "
                  "from bench.runs.validate import reference_traces; from bench.world.suite import "
                  "load_suite; from bench.world.overlay import apply_overlay; suite = load_suite(sys.argv[1]); "
                  "spec = orjson.loads(sys.argv[2]); suite = apply_overlay(suite, spec) if spec else suite; "
                  "out.write(orjson.dumps(reference_traces(suite)))")

Trace = list[list[str]]  # per reference step: tool, observation digest, error digest, state hash


def _fingerprint(value: Any) -> str:
    try:
        return digest(orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS))
    except TypeError:
        return digest(repr(value))


def reference_trace(suite: Suite, task: Task) -> Trace | None:
    """The reference's tool steps on a fresh world, each as its fingerprints; None when a step
    crashes (reported elsewhere, as a failing reference)."""
    world = suite.new_world(task)
    trace: Trace = []
    for action in task.reference_actions:
        if action.tool == "ask_user":
            continue
        try:
            out = world.execute(action.tool, action.args)
        except Exception:  # noqa: BLE001 - a crashing reference is reported by expected_state
            return None
        trace.append([action.tool, _fingerprint(out.observation), _fingerprint(out.error), out.state_hash])
    return trace


def reference_traces(suite: Suite) -> dict[str, Trace | None]:
    return {task.id: reference_trace(suite, task) for task in suite.tasks}


def _contract_problems(suite: Suite) -> list[Problem]:
    """Determinism of every tool on the reference: twice here, then under other hash seeds."""
    here = reference_traces(suite)
    again = reference_traces(suite)
    problems = [p for task in suite.tasks for p in _trace_problems(task, here[task.id], again[task.id], "twice in one process")]
    if problems:
        return problems
    for seed, traces in _subprocess_traces(suite).items():
        if isinstance(traces, str):
            problems.append(Problem(str(suite.path), None, f"the determinism check could not run the suite in a subprocess: {traces}"))
            break
        for task in suite.tasks:
            problems += _trace_problems(task, here[task.id], traces.get(task.id), f"in a process with PYTHONHASHSEED={seed}")
        if problems:
            break
    return problems


def _trace_problems(task: Task, a: Trace | None, b: Trace | None, how: str) -> list[Problem]:
    if a is None or b is None:
        return []
    for n, (x, y) in enumerate(zip(a, b)):
        if x == y:
            continue
        what = [name for name, u, v in zip(("observation", "error", "state hash"), x[1:], y[1:]) if u != v]
        step = _reference_index(task, n)
        return [Problem(task.source, task.id, f"field reference_actions.{step}: tool {x[0]} is not deterministic: its "
                        f"{' and '.join(what)} {'differ' if len(what) > 1 else 'differs'} between two replays of the reference ({how}); a tool must not use "
                        "random, the clock or set iteration order (replay, divergence keys and state pooling rely on it)")]
    return []


def _reference_index(task: Task, tool_step: int) -> int:
    """The index in reference_actions of the n-th tool step (ask_user turns are not traced)."""
    indices = [i for i, a in enumerate(task.reference_actions) if a.tool != "ask_user"]
    return indices[tool_step]


def _subprocess_traces(suite: Suite) -> dict[str, dict[str, Any] | str]:
    """The reference traces from fresh interpreters with other hash seeds (run side by side),
    or why they could not be had."""
    path = getattr(suite, "path", None)
    if not path or not Path(path).is_dir():
        return {}
    root = str(Path(__file__).resolve().parents[2])
    env_path = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    record = getattr(suite, "overlay", None)  # an overlaid suite is rebuilt the same way in the subprocess
    overlay = orjson.dumps(record.get("spec") if isinstance(record, dict) else None).decode()
    procs = {}
    for seed in HASH_SEEDS:
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": env_path}
        procs[seed] = subprocess.Popen([sys.executable, "-c", _TRACE_PROGRAM, str(path), overlay], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: dict[str, dict[str, Any] | str] = {}
    for seed, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            out[seed] = "it did not finish in 300 s"
            continue
        if proc.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()
            out[seed] = f"exit {proc.returncode}: {lines[-1] if lines else 'no message'}"
            continue
        try:
            out[seed] = orjson.loads(stdout)
        except orjson.JSONDecodeError as exc:
            out[seed] = f"its output is not the traces ({exc})"
    return out


def _colliding_ids(suite: Suite, task: Task) -> list[tuple[int, str, str]]:
    """(step, tool, id) for every record the reference creates over one the state holds. Every
    record of every collection is marked; a tool that updates a record keeps its mark (in-place
    edits and `{**record, ...}` copies alike), one that creates a record at a taken id replaces
    it, mark and all. The reference runs on the marked task data, then again with a marked decoy
    at every id it created: a generator that ignores the state overwrites the decoy."""
    initial = copy.deepcopy(suite.initial_state_for(task))
    marked = _mark(initial)
    found, created = _replaced_records(suite, task, initial, marked)
    if found or not created:
        return found
    seeded = copy.deepcopy(suite.initial_state_for(task))
    _mark(seeded)
    for path, value in created:
        _put(seeded, path, {**value, _DECOY: True})
    found, _ = _replaced_records(suite, task, seeded, marked | {path for path, _ in created})
    return found


_DECOY = "_trajbench_seeded_record"


def _mark(state: dict[str, Any]) -> set[tuple[str, ...]]:
    """Mark every record of every collection in `state` (in place); returns their paths."""
    paths = {p for p, obj in _object_paths(state).items()
             if _is_collection(_get(state, p[:-1]), p[-1]) and not _is_collection(obj, None)}
    for p in paths:
        _get(state, p)[_DECOY] = True
    return paths


def _replaced_records(suite: Suite, task: Task, state: dict[str, Any], marked: set[tuple[str, ...]]
                      ) -> tuple[list[tuple[int, str, str]], list[tuple[tuple[str, ...], dict[str, Any]]]]:
    """Run the reference on `state`: the marked records a step replaced (step, tool, id), and
    the records the steps added (path, object)."""
    world = World(suite.tools, state)
    found: list[tuple[int, str, str]] = []
    created: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for i, action in enumerate(task.reference_actions):
        tool = suite.tools.get(action.tool)
        if action.tool == "ask_user" or tool is None or tool.read_only:
            continue
        before = _object_paths(world.state)
        try:
            world.execute(action.tool, action.args)
        except Exception:  # noqa: BLE001 - a crashing reference is reported by expected_state
            break
        after = _object_paths(world.state)
        for path in sorted(marked):
            now = after.get(path)
            if now is not None and not now.get(_DECOY):
                found.append((i, action.tool, path[-1]))
                marked = marked - {path}
        new = after.keys() - before.keys()
        created += [(p, copy.deepcopy(after[p])) for p in sorted(new)
                    if p[:-1] not in new and _is_collection(_get(world.state, p[:-1]), p[-1])]
    return found, created


def _object_paths(state: Any, limit: int = 4) -> dict[tuple[str, ...], dict[str, Any]]:
    """Path -> object for every object held under a key, up to `limit` levels deep (records)."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    stack: list[tuple[tuple[str, ...], Any]] = [((), state)]
    while stack:
        path, value = stack.pop()
        if not isinstance(value, dict) or len(path) >= limit:
            continue
        for key, inner in value.items():
            if isinstance(inner, dict) and key != "_counters":
                out[path + (str(key),)] = inner
                stack.append((path + (str(key),), inner))
    return out


def _is_collection(obj: Any, created: str | None) -> bool:
    """Is `obj` a collection (an object of objects keyed by id: a created record goes in one),
    not a record (with plain-valued fields; an object-valued field added to it is no record)?
    `created` is left out of the test. Records are what `_mark` marks, collections never."""
    return isinstance(obj, dict) and all(isinstance(v, dict) for k, v in obj.items() if k != created)


def _get(state: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(state, dict) or key not in state:
            return None
        state = state[key]
    return state


def _put(state: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        state = state[key]
    state[path[-1]] = value


