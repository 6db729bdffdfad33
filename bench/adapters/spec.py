"""Agent specs: what `--agent` accepts, and the TOML roster under agents/.

Forms of SPEC:
- `sim:oracle`, `sim:noisy?p=0.7&noise=0.1` (options as a query string);
- `cmd:COMMAND LINE?timeout_s=60`: any executable over MCP (`bench.adapters.command`);
- `python:module:attr?key=value`, or simply `module:attr` / `path/to/file.py:attr`;
- a path to a TOML spec file, or the name of one in the roster (`agents/NAME.toml`).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jsonschema

from bench.canonical import canonical_json, digest
from bench.errors import BenchError
from bench.world.task import load_schema

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


SIMULATED_ADAPTERS = frozenset({"sim"})


def is_simulated(adapter: Any) -> bool:
    """A simulated agent (trajbench's own, of known reliability) is known by its adapter alone,
    never by a flag: verify and the leaderboard derive it here (an edited flag proves nothing)."""
    return adapter in SIMULATED_ADAPTERS


def spec_hash(adapter: Any, target: Any, options: Any) -> str:
    """The agent's identity as run: adapter, target and options (not its display name)."""
    return digest(canonical_json({"adapter": adapter, "target": target, "options": options}))


@dataclass(frozen=True)
class AgentSpec:
    name: str
    adapter: str
    options: dict[str, Any]
    target: str | None = None
    source: str = "--agent"
    description: str = ""
    # what one copy of the agent needs where it runs (Ray: num_cpus, num_gpus, memory in bytes);
    # not part of the hash: where an agent runs does not change what it is
    resources: dict[str, Any] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        return is_simulated(self.adapter)

    @property
    def hash(self) -> str:
        return spec_hash(self.adapter, self.target, self.options)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": self.adapter, "target": self.target, "options": self.options,
                "source": self.source, "hash": self.hash, "simulated": self.simulated}

    def build(self) -> Any:
        """Instantiate the agent through its adapter's builder (see ADAPTERS)."""
        module_name, _, func = ADAPTERS[self.adapter].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise BenchError(f"the {self.adapter!r} adapter is not part of this trajbench installation",
                             file=self.source, field="adapter") from None
        return getattr(module, func)(self)


def build_sim(spec: AgentSpec) -> Any:
    from bench.adapters.sim import SimAgent

    if "mood" in spec.options:
        from bench.adapters.sim_mood import MoodSimAgent

        if len(spec.options) > 1:
            raise BenchError("the mood sim agent (sim:noisy?mood=q) takes no other option", file=spec.source, field="options")
        return MoodSimAgent(name=spec.name, mood=spec.options["mood"])
    return SimAgent(name=spec.name, **_sim_options(spec.options, spec.source))


def build_python(spec: AgentSpec) -> Any:
    from bench.adapters.python import build_python_agent

    return build_python_agent(spec.name, spec.target or "", spec.options, spec.source)


# adapter name -> "module:builder"; a builder takes the AgentSpec and returns an agent object
# with run(episode) or async arun(episode). Heavy adapters import their libraries lazily.
ADAPTERS: dict[str, str] = {
    "sim": "bench.adapters.spec:build_sim",
    "python": "bench.adapters.spec:build_python",
    "local": "bench.adapters.local:build_local",
    "openai": "bench.adapters.openai_compat:build_openai",
    "langgraph": "bench.adapters.langgraph_adapter:build_langgraph",
    "command": "bench.adapters.command:build_command",
    "agents-sdk": "bench.adapters.agents_sdk:build_agents_sdk",
    "pydantic-ai": "bench.adapters.pydantic_ai_adapter:build_pydantic_ai",
}


def _sim_options(options: dict[str, Any], source: str) -> dict[str, Any]:
    allowed = {"p", "step_error", "modes", "noise", "plant_step", "plant_q", "plant_f", "family_p", "mood"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise BenchError(f"unknown sim option(s) {unknown}; allowed: {sorted(allowed)}", file=source, field="options")
    out = dict(options)
    for key in ("step_error", "noise"):
        if key in out:
            try:
                out[key] = float(out[key])
            except (TypeError, ValueError):
                raise BenchError(f"{key} must be a number, got {out[key]!r}", file=source, field=f"options.{key}") from None
    return out


def agent_roots() -> list[Path]:
    package = Path(__file__).resolve().parent.parent  # bench/
    return [p for p in (package / "_agents", package.parent / "agents") if p.is_dir()]


def roster() -> list[str]:
    return sorted({p.stem for root in agent_roots() for p in root.glob("*.toml")})


def parse_agent_spec(spec: str) -> AgentSpec:
    if spec.startswith("sim:"):
        kind, _, query = spec[4:].partition("?")
        options = dict(parse_qsl(query, keep_blank_values=True))
        if kind == "oracle":
            if options:
                raise BenchError("sim:oracle takes no options", field="--agent")
            return AgentSpec(spec, "sim", {}, source="--agent")
        if kind == "noisy":
            if not options:
                raise BenchError("sim:noisy needs options, e.g. sim:noisy?p=0.7 or sim:noisy?step_error=0.05", field="--agent")
            return AgentSpec(spec, "sim", options, source="--agent")
        raise BenchError(f"unknown simulated agent {spec!r}; use sim:oracle or sim:noisy?p=…", field="--agent")
    if spec.startswith("cmd:"):
        command, _, query = spec[4:].partition("?")
        return AgentSpec(spec, "command", dict(parse_qsl(query)), target=command, source="--agent")
    if spec.endswith(".toml") or Path(spec).suffix == ".toml":
        return load_agent_file(Path(spec))
    for root in agent_roots():
        if (root / f"{spec}.toml").is_file():
            return load_agent_file(root / f"{spec}.toml")
    target = spec[len("python:"):] if spec.startswith("python:") else spec
    if ":" in target:
        target, _, query = target.partition("?")
        return AgentSpec(spec, "python", dict(parse_qsl(query)), target=target, source="--agent")
    known = ", ".join(roster()) or "none"
    raise BenchError(
        f"unknown agent spec {spec!r}: expected sim:oracle, sim:noisy?p=…, module:attr, file.py:attr, "
        f"a .toml file, or a roster name (roster: {known})", field="--agent")


def load_agent_file(path: Path) -> AgentSpec:
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise BenchError("no such agent spec file", file=str(path)) from None
    except OSError as exc:
        raise BenchError(f"cannot be read as an agent spec file: {exc.strerror}", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise BenchError(f"not a text file (byte {exc.start} is not UTF-8): an agent spec is a TOML text file",
                         file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"not valid TOML: {exc}", file=str(path)) from None
    validator = jsonschema.Draft202012Validator(load_schema("agent.schema.json"))
    problem = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if problem is not None:
        where = ".".join(str(p) for p in problem.absolute_path) or "(top level)"
        raise BenchError(problem.message, file=str(path), field=where)
    return AgentSpec(data["name"], data["adapter"], dict(data.get("options", {})), data.get("target"),
                     str(path), data.get("description", ""), dict(data.get("resources", {})))
