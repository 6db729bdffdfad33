"""Agents that bring their own process: any executable, run once per trial against the episode
served over MCP (`bench.adapters.mcp_server`), so it needs no trajbench code at all.

The child gets, in its environment:

- `TRAJBENCH_MCP_URL`: the trial's streamable-HTTP MCP endpoint on loopback;
- `TRAJBENCH_INSTRUCTION`, `TRAJBENCH_POLICY`: what the user asks, and the suite's policy;
- `TRAJBENCH_SEED`, `TRAJBENCH_MAX_STEPS`, `TRAJBENCH_TRIAL`: seed, tool-call budget, trial id;
- when the spec names a model endpoint (`base_url` + `model`, or `launch = "llama_cpp"`, as for
  the `openai` adapter): `TRAJBENCH_MODEL_BASE_URL`, `TRAJBENCH_MODEL` and, if `api_key_env`
  names one, `TRAJBENCH_MODEL_API_KEY` — so that a roster spec can run its own agent on the
  local model with no key.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.episode import Episode, EpisodeTimeout
from bench.errors import BenchError, InfraError

DEFAULT_TIMEOUT_S = 300.0


class AgentProcessFailed(RuntimeError):
    """The agent's process exited non-zero: the agent's failure, never an infrastructure error."""


@dataclass
class CommandAgent:
    name: str
    argv: list[str]
    timeout_s: float = DEFAULT_TIMEOUT_S
    model_env: dict[str, str] = field(default_factory=dict)  # the model endpoint, if the spec names one

    def run(self, episode: Episode) -> str | None:
        from bench.adapters.mcp_server import ServerStartError, serve_http

        try:
            with serve_http(episode) as url:
                return self._run_child(episode, url)
        except ServerStartError as exc:
            raise InfraError(str(exc)) from exc

    def _run_child(self, episode: Episode, url: str) -> str | None:
        child = subprocess.Popen(self.argv, env={**_child_env(episode, url), **self.model_env}, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        remaining = episode.remaining_s
        own_limit = remaining is None or self.timeout_s < remaining
        try:
            stdout, stderr = child.communicate(timeout=self.timeout_s if own_limit else remaining)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            episode.annotations["exit_status"] = "killed at timeout"
            if own_limit:  # the spec's own timeout_s: the agent's failure, not the trial's --timeout
                raise AgentProcessFailed(f"the agent process ran past its own timeout_s = {self.timeout_s} s "
                                         "and was killed") from None
            episode.timed_out = True
            raise EpisodeTimeout("the agent process ran past the trial's time limit and was killed") from None
        episode.annotations["exit_status"] = child.returncode
        if child.returncode != 0:
            tail = stderr.strip().splitlines()[-1:] or ["no stderr"]
            raise AgentProcessFailed(f"the agent process exited with status {child.returncode}: {tail[0]}")
        return episode.answer if episode.answer is not None else stdout.strip()


def _child_env(episode: Episode, url: str) -> dict[str, str]:
    return {**os.environ, "TRAJBENCH_MCP_URL": url, "TRAJBENCH_INSTRUCTION": episode.instruction,
            "TRAJBENCH_POLICY": episode.policy, "TRAJBENCH_SEED": str(episode.seed),
            "TRAJBENCH_MAX_STEPS": str(episode.max_steps), "TRAJBENCH_TRIAL": episode.trial_id}


def _kill_group(child: subprocess.Popen[str]) -> None:
    """Kill the child and everything it started (its own session), then reap it."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.communicate()


def options_table() -> dict[str, Any]:
    """The command adapter's options: the command, its own time limit, a model endpoint."""
    from bench.adapters.openai_compat import ENDPOINT_OPTIONS
    from bench.adapters.options import OptionSpec

    return {"command": OptionSpec("any", None), "timeout_s": OptionSpec("float", DEFAULT_TIMEOUT_S, minimum=0.001),
            **ENDPOINT_OPTIONS}


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
    return CommandAgent(spec.name, argv, opts["timeout_s"], _model_env(opts, spec.source))


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
