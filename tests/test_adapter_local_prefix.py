"""The local engine's reuse of prompt prefixes: the LRU of saved KV states (no model), and with
the real SmolLM2 model that restoring a saved state equals evaluating the prefix, and that reuse
on, off, interleaved or in another order of trials logs the same trajectories for the same seeds."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bench.adapters.local import PrefixStates
from bench.adapters.spec import AgentSpec
from bench.errors import BenchError

# -- the store, without the model ---------------------------------------------------------------

def test_states_are_dropped_least_recently_used_first_past_the_budget():
    store = PrefixStates(budget=250)
    for key in ((1,), (2,), (3,)):
        assert store.claim(key) is None  # not saved: the caller evaluates it
        store.done(key, bytearray(100))
    assert len(store) == 2 and store.bytes == 200 and store.evicted == 1
    assert store.get((1,)) is None and store.get((2,)) is not None  # (2,) is now the most recent
    assert store.claim((4,)) is None
    store.done((4,), bytearray(100))
    assert store.get((3,)) is None and store.get((2,)) is not None and store.get((4,)) is not None
    store.done((5,), bytearray(300))  # larger than the whole budget: not kept, nothing evicted for it
    assert store.get((5,)) is None and len(store) == 2
    store.done((6,), None)  # the evaluation failed: nothing saved, waiters released
    assert store.claim((6,)) is None


def test_a_prefix_being_evaluated_is_waited_for_not_evaluated_twice():
    store = PrefixStates(budget=1000)
    assert store.claim((7,)) is None  # this thread evaluates (7,)
    got = []
    waiter = threading.Thread(target=lambda: got.append(store.claim((7,))))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive() and not got  # still waiting for the state
    state = bytearray(10)
    store.done((7,), state)
    waiter.join(10)
    assert got == [state] and store.saved == 1


def test_prefix_cache_options_are_checked():
    with pytest.raises(BenchError, match="prefix_cache_mb"):
        AgentSpec("x", "local", {"prefix_cache_mb": -1}).build()
    with pytest.raises(BenchError, match="prefix_cache"):
        AgentSpec("x", "local", {"prefix_cache": "sometimes"}).build()


# -- with the real model ----------------------------------------------------------------------

OPTIONS = {"temperature": 0.8, "max_tokens": 96, "n_ctx": 2048}
TASKS = ["cancel-pending", "refuse-cancel-delivered"]


def _run(suite, options, out, k, tasks, concurrency):
    from bench.runs.rundir import read_run
    from bench.runs.runner import RunConfig, run_benchmark

    config = RunConfig(k=k, out=Path(out), progress=False, retry_backoff_s=0.0, max_steps=3, concurrency=concurrency)
    run_benchmark(suite, AgentSpec("smollm2-prefix", "local", {**OPTIONS, **options}), tasks, config)
    return read_run(out)


def _actions(log):
    return {t: [(s["kind"], s.get("tool"), repr(s.get("args")), str(s.get("output"))) for s in log.trial_steps(t)]
            for t in log.summaries}


@pytest.mark.slow
def test_restoring_a_state_gives_the_logits_of_evaluating_it(mini_suite):
    import numpy as np

    from bench.adapters.local import LocalEngine, resolve_model
    from bench.adapters.options import Scaffold
    from bench.adapters.prompting import Conversation

    task = mini_suite.tasks[0]
    messages = Conversation(mini_suite.policy, task.instruction, mini_suite.tool_specs(), Scaffold()).messages()
    engine = LocalEngine(resolve_model("smollm2"), 2048, 0, 512, 2, 0, True, 64)
    first, second = engine._instances

    def last_logits(llm):
        tokens, kept, restored = engine._prefill(llm, messages)
        llm.eval(tokens[llm.n_tokens:])
        return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm._n_vocab,)).copy(), kept, restored

    evaluated, _, restored = last_logits(first)  # evaluates, and saves the shared prefixes
    assert restored == 0 and len(engine.states) == 2 and engine.states.bytes == sum(
        len(s) for s in engine.states._states.values())
    loaded, kept, restored = last_logits(second)  # a fresh instance: restores system + instruction
    assert kept == 0 and restored > 0 and np.array_equal(evaluated, loaded)


@pytest.mark.slow
def test_same_seed_same_trajectory_with_reuse_on_or_off_in_any_order(mini_suite, tmp_path):
    """Temperature 0.8: trials of two tasks interleaved over one instance (restoring each task's
    saved prefix at most turns) and no reuse at all, one trial at a time in the reverse task
    order, log the same model outputs and tool calls trial by trial (benchmarks/local_prefix.py
    compares more configurations, e.g. two instances)."""
    # one trial per task, two at once over one instance: each turn finds the other task's
    # conversation in the cache and restores its own task's saved prefix
    interleaved = _run(mini_suite, {"instances": 1, "prefix_cache_mb": 200}, tmp_path / "a", 1, TASKS, concurrency=2)
    stats = [s["agent_info"]["prompt_eval"] for s in interleaved.summaries.values()]
    assert all(p["prompt_tokens"] == p["cached_tokens"] + p["restored_tokens"] + p["evaluated_tokens"] for p in stats)
    assert sum(p["restored_tokens"] for p in stats) > 0 and all(p["prompt_eval_s"] > 0 for p in stats)
    off = _run(mini_suite, {"prefix_cache": False}, tmp_path / "c", 1, TASKS[::-1], concurrency=1)
    assert all(p["cached_tokens"] == p["restored_tokens"] == 0
               for p in (s["agent_info"]["prompt_eval"] for s in off.summaries.values()))
    a, c = _actions(interleaved), _actions(off)
    assert len(a) == len(c) == 2 and a == c
