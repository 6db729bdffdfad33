"""Agents that bring their own process: any executable, run once per trial against the episode
served over MCP (`bench.adapters.mcp_server`), so it needs no trajbench code at all.

The child gets, in its environment:

- `TRAJBENCH_MCP_URL`: the trial's streamable-HTTP MCP endpoint on loopback;
- `TRAJBENCH_INSTRUCTION`, `TRAJBENCH_POLICY`: what the user asks, and the suite's policy;
- `TRAJBENCH_SEED`, `TRAJBENCH_MAX_STEPS`, `TRAJBENCH_TRIAL`: seed, tool-call budget, trial id;
- when the spec names a model endpoint (`base_url` + `model`, or `launch = "llama_cpp"`, as for
  the `openai` adapter): `TRAJBENCH_MODEL_BASE_URL`, `TRAJBENCH_MODEL` and, if `api_key_env`
  names one, `TRAJBENCH_MODEL_API_KEY` — so that a roster spec can run its own agent on the
  local model with no key;
- `TRAJBENCH_TURNS`: the path of the trial's model-turn report, to which the child appends one
  JSON line per model turn (tokens, latency, messages), logged as the same model-turn records
  an in-process adapter logs (`bench.adapters.turn_report`; priced with the spec's
  `input_cost_per_mtok` / `output_cost_per_mtok`). A child that writes none reports no turns.

Resuming from a restored prefix (`trajbench replay`, docs/divergence.md §11): the child's own
process owns its conversation, so it is handed the prefix to rebuild it. The MCP server serves the
restored episode (its world already holds the prefix's effects), and the child also gets
`TRAJBENCH_PREFIX`, the path of a JSON file

    {"format": "trajbench-prefix/1", "task": ..., "trial": ...,
     "steps": [{"tool": ..., "args": ..., "observation": ..., "error": ...}, ...],
     "keys": [step key, ...]}

holding the calls already made (with what each returned, the forced step of an alternative
last), which it must not make again: it continues from the state they leave. A child that does
not read it would start the task afresh on a world that has moved on, so an agent that cannot
resume declares it with the option `resume = "none"` (`cmd:...?resume=none`), and `replay`
refuses it with one error naming the protocol. The default, `resume = "prefix"`, trusts the child
to read `TRAJBENCH_PREFIX` (which is unset in an ordinary trial).

In the command, `{python}` is this Python interpreter and `{spec_dir}` the folder of the spec
file (a roster spec can ship its agent script beside it).

The answer is what the child gave to the MCP `final_answer` tool, else its stdout (stripped).
The child runs in its own session; at the timeout the whole process group is killed and the
trial fails on time. A child that exits non-zero is the agent's failure (exit status recorded);
an MCP server that cannot start is an infrastructure error (the runner retries the trial).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.adapters.turn_report import ENV as TURNS_ENV
from bench.adapters.turn_report import TurnReport
from bench.episode import Episode, EpisodeTimeout
from bench.errors import BenchError, InfraError

DEFAULT_TIMEOUT_S = 300.0
PREFIX_FORMAT = "trajbench-prefix/1"


class AgentProcessFailed(RuntimeError):
    """The agent's process exited non-zero: the agent's failure, never an infrastructure error."""


@dataclass
class CommandAgent:
    name: str
    argv: list[str]
    timeout_s: float = DEFAULT_TIMEOUT_S
    model_env: dict[str, str] = field(default_factory=dict)  # the model endpoint, if the spec names one
    resume_mode: str = "prefix"  # "prefix": the child reads TRAJBENCH_PREFIX; "none": it cannot resume
    model: str | None = None  # the spec's model: the reported turns' default
    prices: dict[str, float] = field(default_factory=dict)  # input_cost_per_mtok, output_cost_per_mtok of the reported turns

    @property
    def resume_supported(self) -> bool:
        """Read by `bench.analysis.prefix.resumable`: does the child follow the resume protocol?"""
        return self.resume_mode != "none"

    def run(self, episode: Episode) -> str | None:
        return self._serve(episode, None)

    def resume(self, episode: Episode, prefix: list[str]) -> str | None:
        """Continue a restored episode: the child gets TRAJBENCH_PREFIX (see the module doc)."""
        return self._serve(episode, prefix)

    def _serve(self, episode: Episode, prefix: list[str] | None) -> str | None:
        """The trial: its folder (the turn report, a continuation's prefix file), its MCP server,
        then the child."""
        from bench.adapters.mcp_server import ServerStartError, serve_http

        with tempfile.TemporaryDirectory(prefix="trajbench-trial-") as folder:
            turns = TurnReport(episode, Path(folder) / "turns.jsonl", model=self.model, cost=self._cost)
            env = {TURNS_ENV: str(turns.path)}
            if prefix is not None:
                env["TRAJBENCH_PREFIX"] = _write_prefix(episode, prefix, Path(folder) / "prefix.json")
            try:
                with serve_http(episode, before_call=turns.read) as url:
                    return self._run_child(episode, url, env, turns)
            except ServerStartError as exc:
                raise InfraError(str(exc)) from exc

    def _cost(self, tokens_in: int | None, tokens_out: int | None) -> float:
        from bench.adapters.openai_compat import turn_cost as cost

        return cost({"input_cost_per_mtok": 0.0, "output_cost_per_mtok": 0.0, **self.prices}, tokens_in, tokens_out)

    def _run_child(self, episode: Episode, url: str, extra_env: dict[str, str], turns: TurnReport) -> str | None:
        env = {**_child_env(episode, url), **self.model_env, **extra_env}
        child = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        turns.on_error = lambda: _signal_group(child)  # a bad turn line: the trial has failed, stop the child
        remaining = episode.remaining_s
        own_limit = remaining is None or self.timeout_s < remaining
        try:
            stdout, stderr = child.communicate(timeout=self.timeout_s if own_limit else remaining)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            turns.read()  # the turns it reported before the kill (none once the trial's time is up)
            episode.annotations["exit_status"] = "killed at timeout"
            if own_limit:  # the spec's own timeout_s: the agent's failure, not the trial's --timeout
                raise AgentProcessFailed(f"the agent process ran past its own timeout_s = {self.timeout_s} s "
                                         "and was killed") from None
            episode.timed_out = True
            raise EpisodeTimeout("the agent process ran past the trial's time limit and was killed") from None
        if turns.error is not None and child.returncode < 0:  # killed by `turns.on_error`
            episode.annotations["exit_status"] = "killed: invalid turn report"
            raise AgentProcessFailed(f"the agent's model-turn report is invalid: {turns.error}")
        turns.read(final=child.returncode == 0)
        episode.annotations["exit_status"] = child.returncode
        if child.returncode != 0:
            tail = stderr.strip().splitlines()[-1:] or ["no stderr"]
            raise AgentProcessFailed(f"the agent process exited with status {child.returncode}: {tail[0]}")
        if turns.error is not None:
            raise AgentProcessFailed(f"the agent's model-turn report is invalid: {turns.error}")
        return episode.answer if episode.answer is not None else stdout.strip()


def _write_prefix(episode: Episode, prefix: list[str], path: Path) -> str:
    """The restored calls as the child reads them (TRAJBENCH_PREFIX, the module doc)."""
    steps = [{"tool": tool, "args": args, "observation": obs.value, "error": obs.error}
             for tool, args, obs in episode.restored_calls]
    path.write_bytes(orjson.dumps({"format": PREFIX_FORMAT, "task": episode.task_id, "trial": episode.trial_id,
                                   "steps": steps, "keys": prefix}, default=repr))
    return str(path)


def _child_env(episode: Episode, url: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if k != "TRAJBENCH_PREFIX"}  # only a resumed child gets one
    return {**inherited, "TRAJBENCH_MCP_URL": url, "TRAJBENCH_INSTRUCTION": episode.instruction,
            "TRAJBENCH_POLICY": episode.policy, "TRAJBENCH_SEED": str(episode.seed),
            "TRAJBENCH_MAX_STEPS": str(episode.max_steps), "TRAJBENCH_TRIAL": episode.trial_id}


def _signal_group(child: subprocess.Popen[str]) -> None:
    """Kill the child and everything it started (its own session)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_group(child: subprocess.Popen[str]) -> None:
    """Kill the child's process group, then reap the child."""
    _signal_group(child)
    child.communicate()


def options_table() -> dict[str, Any]:
    """The command adapter's options: the command, its own time limit, a model endpoint."""
    from bench.adapters.openai_compat import ENDPOINT_OPTIONS
    from bench.adapters.options import OptionSpec

    return {"command": OptionSpec("any", None), "timeout_s": OptionSpec("float", DEFAULT_TIMEOUT_S, minimum=0.001),
            "resume": OptionSpec("str", "prefix", choices=("prefix", "none")), **ENDPOINT_OPTIONS,
            "input_cost_per_mtok": OptionSpec("float", 0.0, minimum=0.0),
            "output_cost_per_mtok": OptionSpec("float", 0.0, minimum=0.0)}


def build_command(spec: Any) -> CommandAgent:
    """Builder for `cmd:COMMAND LINE` and roster `adapter = "command"` (options.command,
    timeout_s, and optionally a model endpoint: see the module doc)."""
    from bench.adapters.options import parse_options

    opts, _ = parse_options(spec.options, options_table(), spec.source, "command")
    command = opts["command"] or spec.target
    argv = shlex.split(command) if isinstance(command, str) else command
    if not argv or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise BenchError("the command adapter needs a command line, e.g. cmd:python agent.py",
                         file=spec.source, field="options.command")
    spec_dir = str(Path(spec.source).resolve().parent) if spec.source != "--agent" else os.getcwd()
    argv = [a.replace("{python}", sys.executable).replace("{spec_dir}", spec_dir) for a in argv]
    model_env = _model_env(opts, spec.source)
    prices = {key: opts[key] for key in ("input_cost_per_mtok", "output_cost_per_mtok")}
    return CommandAgent(spec.name, argv, opts["timeout_s"], model_env, opts["resume"], model_env.get("TRAJBENCH_MODEL"), prices)


def _model_env(opts: dict[str, Any], source: str) -> dict[str, str]:
    """The model endpoint handed to the child, when the spec names one (else nothing)."""
    if not (opts["base_url"] or opts["launch"] or opts["model"]):
        return {}
    from bench.adapters.openai_compat import resolve_endpoint

    endpoint = resolve_endpoint(opts, source, "command")
    env = {"TRAJBENCH_MODEL_BASE_URL": endpoint.base_url, "TRAJBENCH_MODEL": endpoint.model}
    if endpoint.api_key:
        env["TRAJBENCH_MODEL_API_KEY"] = endpoint.api_key
    return env
