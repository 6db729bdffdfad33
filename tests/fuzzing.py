"""The fuzz harness shared by tests/test_fuzz.py (a fast slice, hypothesis) and benchmarks/fuzz.py
(the long campaign): hostile inputs for every command, and the rules every answer must keep.

An input is a *case*: a JSON-able dict naming its surface and what to break, applied to fresh
copies of a pristine suite (tests/fixtures/mini) and a pristine, sealed run of it. Cases come
from `generate(surface, rng)` (random.Random: hypothesis hands one in, the campaign seeds its
own) or from the corpus of crash reproducers in tests/fixtures/fuzz_corpus/. Each case gives
one or more CLI calls, run in-process through `bench.cli.main` with `--debug`, so that a crash
that reaches the last-resort boundary shows where it started. The rules (`check`):

- no Python traceback escapes a command, and none reaches the boundary from harness code (an
  exception raised in bench/ rather than in the user's domain or agent code is a crash site);
- no exit 0 on input that is broken by construction (`must_fail`), and verify / leaderboard
  never accept a run directory whose bytes were changed;
- a read-only command (validate, report, view --out elsewhere, verify, export, diff,
  leaderboard) changes nothing in the run directory or suite it reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from bench.cli import main
from tests.conftest import read_log, write_log

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "tests" / "fixtures" / "mini"
CORPUS = ROOT / "tests" / "fixtures" / "fuzz_corpus"
SURFACES = ("task", "suite_toml", "domain", "agent", "run_dir", "argv")
READ_ONLY = {"validate", "report", "view", "verify", "export", "diff", "leaderboard"}
BOUNDARY = "(re-run with --debug for the traceback)"


@dataclass
class Call:
    argv: list[str]
    must_fail: bool = False  # exit 0 would be a silent wrong success
    watch: list[Path] = field(default_factory=list)  # must not change (read-only commands)
    isolate: bool = False  # in a subprocess with a deadline: the call may hang (absurd sizes)
    cwd: Path | None = None  # relative outputs (`--out x`, `--out ""`) land here, never in the checkout


@dataclass
class Result:
    case: dict[str, Any]
    argv: list[str]
    code: int
    stdout: str
    stderr: str
    violations: list[str]
    crash_site: str | None = None  # file:line of an exception from harness code


# ------------------------------------------------------------------------------ running
@contextlib.contextmanager
def _in_dir(path: Path | None) -> Iterator[None]:
    """Run in `path` (contextlib.chdir is Python 3.11+)."""
    before = os.getcwd()
    os.chdir(path or before)
    try:
        yield
    finally:
        os.chdir(before)


def invoke(argv: list[str], cwd: Path | None = None) -> tuple[int, str, str, str | None]:
    """`trajbench --debug ARGV` in-process: exit code, stdout, stderr, and an escaped traceback."""
    out, err = io.StringIO(), io.StringIO()
    escaped = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _in_dir(cwd):
        try:
            code = main(["--debug", *argv])
        except SystemExit as exc:  # argparse's own errors
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # noqa: BLE001 - the very thing the fuzzer looks for
            escaped = traceback.format_exc()
            code = -1
    return code, out.getvalue(), err.getvalue(), escaped


ISOLATED_TIMEOUT = 60.0


def invoke_isolated(argv: list[str], cwd: Path | None = None, timeout: float = ISOLATED_TIMEOUT) -> tuple[int, str, str, str | None]:
    """`trajbench --debug ARGV` in a subprocess; a call that does not end in `timeout` is killed
    and reported as a hang."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        proc = subprocess.run([sys.executable, "-m", "bench", "--debug", *argv], capture_output=True, text=True,
                              timeout=timeout, env=env, errors="replace", cwd=cwd)
    except subprocess.TimeoutExpired:
        return -2, "", "", None
    escaped = proc.stderr if "Traceback" in proc.stderr and BOUNDARY not in proc.stderr else None
    return proc.returncode, proc.stdout, proc.stderr, escaped


def _crash_site(stderr: str) -> str | None:
    """Where an exception that reached the boundary was raised, if in the harness's own code
    (bench/): the innermost frame of the --debug traceback. User code (a domain, an agent) may
    raise anything; the boundary containing it is the documented behaviour."""
    if BOUNDARY not in stderr or "Traceback" not in stderr:
        return None
    frames = [line.strip() for line in stderr.splitlines() if line.strip().startswith('File "')]
    if not frames:
        return None
    innermost = frames[-1]
    path = innermost.split('"')[1]
    if "/bench/" not in path or "/site-packages/" in path:
        return None
    line = innermost.split("line ")[1].split(",")[0]
    return f"{path[path.index('/bench/') + 1:]}:{line}"


def snapshot(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under `paths` (caches aside)."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def check(case: dict[str, Any], call: Call) -> Result:
    before = snapshot(call.watch)
    code, stdout, stderr, escaped = invoke_isolated(call.argv, call.cwd) if call.isolate else invoke(call.argv, call.cwd)
    violations = []
    if code == -2:
        violations.append(f"no answer in {ISOLATED_TIMEOUT:.0f} s (a hang, or no cap on an absurd size)")
    if escaped or "Traceback" in stdout:
        violations.append("a traceback escaped: " + (escaped or stdout).strip().splitlines()[-1])
    site = _crash_site(stderr)
    if site:
        violations.append(f"harness crash site {site}: {stderr.strip().splitlines()[-1][:200]}")
    if call.must_fail and code == 0:
        violations.append("exit 0 on broken input")
    if code not in (0, 1, 2, -2):
        violations.append(f"exit status {code}")
    if call.watch and snapshot(call.watch) != before:
        violations.append("a read-only command changed its input")
    return Result(case, call.argv, code, stdout, stderr, violations, site)


# ------------------------------------------------------------------------------ the workspace
class Workspace:
    """Pristine inputs, made once: the mini suite and a sealed sim run of it (k = 2)."""

    def __init__(self, base: Path):
        self.base = base
        self.suite = base / "pristine-suite"
        shutil.copytree(MINI, self.suite, ignore=shutil.ignore_patterns("__pycache__"))
        self.run = base / "pristine-run"
        code, _, err, escaped = invoke(["run", str(self.suite), "--agent", "sim:noisy?p=0.6", "-k", "2", "--quiet",
                                        "--out", str(self.run)])
        assert code == 0 and not escaped, err
        self._n = 0

    def scratch(self) -> Path:
        self._n += 1
        path = self.base / f"case-{self._n}"
        path.mkdir()
        return path


# ------------------------------------------------------------------------------ values
def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value of a kind a field would not expect."""
    kinds = ["null", "true", "int", "bigint", "negint", "float", "str", "empty", "list", "dict", "surrogate", "deep"]
    kind = rng.choice(kinds if depth < 2 else kinds[:8])
    if kind == "deep":
        return {"deep": f"DEEP-{rng.choice((50, 1100))}"}  # nesting that deep, spliced in as text by `dumps`
    if kind == "list":
        return [hostile_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "dict":
        return {rng.choice(("type", "k", "a", "1")): hostile_value(rng, depth + 1) for _ in range(rng.randint(0, 2))}
    return {
        "null": None, "true": True, "int": rng.randint(-3, 3), "bigint": 2 ** rng.choice((63, 64, 100)),
        "negint": -rng.randint(1, 10 ** 6), "float": rng.choice((0.5, -1.5, 1e308)), "str": rng.choice(("nope", "x" * 300, "../..", "")),
        "empty": rng.choice(([], {})), "surrogate": "\ud800oops",
    }[kind]


def _json_paths(value: Any, prefix: tuple = (), limit: int = 4) -> list[tuple]:
    out = [prefix]
    if len(prefix) >= limit:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out += _json_paths(v, prefix + (k,), limit)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _json_paths(v, prefix + (i,), limit)
    return out


def edit_json(doc: Any, path: list, action: str, value: Any = None) -> Any:
    """`doc` with the value at `path` set to `value` or deleted (path [] is the document)."""
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


# ------------------------------------------------------------------------------ generators
MISBEHAVIOURS = [
    ("raise KeyError('missing')", True), ("raise TypeError('bad')", True), ("return {1, 2}", True),
    ("return b'bytes'", True), ("return object()", True), ("raise SystemExit(0)", True), ("raise SystemExit(3)", True),
    ("raise RecursionError()", True), ("db['orders'] = {1, 2}", True), ("return float('nan')", False),
    ("print('noise')", False), ("db['orders']['O1']['status'] = object()", True), ("raise ValueError('\\ud800')", True),
    ("import random; return {'x': random.random()}", True), ("return {'big': 'x' * 10**6}", False),
    ("raise MemoryError()", True), ("raise GeneratorExit()", True), ("db.clear()", True),
]


def generate(surface: str, rng: random.Random) -> dict[str, Any]:
    """One random case on `surface` (see SURFACES)."""
    if surface == "task":
        tasks = json.loads((MINI / "tasks" / "tasks.json").read_text())
        paths = _json_paths(tasks)
        action = rng.choice(("set", "set", "delete", "truncate"))
        if action == "truncate":
            return {"surface": surface, "action": "truncate", "cut": rng.randint(0, 400)}
        path = list(rng.choice(paths[1:]))
        return {"surface": surface, "action": action, "path": path, "value": hostile_value(rng)}
    if surface == "suite_toml":
        key = rng.choice(("name", "domain", "initial_state", "policy", "tasks", "description", "version", "nonsense"))
        value = rng.choice(("1", "[]", '"nope.py"', '"../../etc/passwd"', '"db.json"', "{a = 1}", '"\\u0000"', "true", '""'))
        return {"surface": surface, "line": f"{key} = {value}", "replace": rng.random() < 0.7,
                "garbage": rng.random() < 0.1}
    if surface == "domain":
        body, broken = rng.choice(MISBEHAVIOURS)
        return {"surface": surface, "tool": rng.choice(("cancel_order", "find_customer", "refund_order")), "body": body,
                "broken": broken}
    if surface == "agent":
        kind = rng.choice(("spec", "file", "binary"))
        if kind == "spec":
            spec = rng.choice(("sim:", "sim:noisy?p=2", "sim:noisy?p=nan", "cmd:", "python:", "nope:nothing", ":", "x.py:agent",
                               "python:os:system", "sim:noisy?p=0.5&noise=-1", "sim:oracle?" + "a=1&" * 50, "\x00", "ÿ"))
            return {"surface": surface, "kind": kind, "spec": spec}
        if kind == "binary":
            return {"surface": surface, "kind": kind, "bytes": bytes(rng.randrange(256) for _ in range(64)).hex()}
        line = rng.choice(('name = 1', 'adapter = "nope"', 'adapter = "sim"\noptions = 5', '[[x]]', 'name = "a"\nadapter = "python"',
                           'adapter = "sim"\noptions = {p = "x"}', '= =', 'name = "a"\nadapter = "cmd"\ntarget = ""'))
        return {"surface": surface, "kind": kind, "toml": line}
    if surface == "run_dir":
        where = rng.choice(("manifest", "manifest", "record", "line"))
        if where == "manifest":
            manifest = json.loads((MINI / ".." / ".." / ".." / "bench" / "schemas" / "run.schema.json").read_text())
            keys = [*manifest["required"], "seal", "overlay", "agent.name", "agent.adapter", "agent.options", "suite.hash",
                    "suite.name", "k", "tasks", "perturbations"]
            return {"surface": surface, "where": where, "key": rng.choice(keys), "delete": rng.random() < 0.2,
                    "value": hostile_value(rng), "command": rng.choice(sorted(READ_ONLY - {"validate"}))}
        if where == "record":
            return {"surface": surface, "where": where, "type": rng.choice(("trial", "step")),
                    "key": rng.choice(("outcome", "trial", "task", "attempt", "step", "kind", "args", "observation", "checks",
                                       "answer", "index", "variant", "seed", "steps", "state_hash", "input_tokens", "type")),
                    "nth": rng.randint(0, 5), "delete": rng.random() < 0.2, "value": hostile_value(rng),
                    "command": rng.choice(sorted(READ_ONLY - {"validate"}))}
        return {"surface": surface, "where": where, "line": rng.choice(("{", "[]", "1", "null", '{"type": 1}', "\xff", "")),
                "at": rng.choice(("end", "start", "middle")), "command": rng.choice(sorted(READ_ONLY - {"validate"}))}
    if surface == "argv":
        command = rng.choice(("run", "report", "diff", "view", "verify", "export", "leaderboard", "validate", "import", "replay"))
        flags = {"run": ["-k", "--seed", "--retries", "--timeout", "--max-steps", "--concurrency", "--variants",
                         "--variants-per-family", "--tasks", "--overlay", "--baseline", "--alpha", "--out"],
                 "report": ["--bootstrap", "--min-support", "--alpha", "--divergence-key"],
                 "leaderboard": ["-k", "--bootstrap", "--out", "--suite"], "diff": ["--alpha", "--k"],
                 "export": ["--format", "--out"], "view": ["--task", "--out"], "verify": ["--suite"],
                 "validate": [], "import": ["--out"], "replay": ["--task", "--at", "-m", "--budget"]}[command]
        chosen = rng.sample(flags, k=min(len(flags), rng.randint(0, 3)))
        values = ("99999999999999999999999", "18446744073709551616", "-1", "0", "nan", "inf", "1e309", "", "x", "{file}",
                  "{run}", "{suite}", "{missing}", "action", "1")
        return {"surface": surface, "command": command, "flags": [[f, rng.choice(values)] for f in chosen]}
    raise ValueError(surface)


# ------------------------------------------------------------------------------ applying
def calls(case: dict[str, Any], ws: Workspace) -> list[Call]:
    """The CLI calls a case makes, on fresh copies of the pristine inputs."""
    scratch = ws.scratch()
    handler: Callable[[dict[str, Any], Workspace, Path], list[Call]] = _APPLY[case["surface"]]
    made = handler(case, ws, scratch)
    for call in made:
        call.cwd = scratch / "cwd"
        call.cwd.mkdir(exist_ok=True)
    return made


def _suite_copy(ws: Workspace, scratch: Path) -> Path:
    suite = scratch / "suite"
    shutil.copytree(ws.suite, suite)
    return suite


def _suite_calls(suite: Path, scratch: Path, must_fail: bool) -> list[Call]:
    return [Call(["validate", str(suite)], must_fail, [suite]),
            Call(["run", str(suite), "--agent", "sim:oracle", "-k", "1", "--quiet", "--out", str(scratch / "out")], False)]


def _apply_task(case: dict[str, Any], ws: Workspace, scratch: Path) -> list[Call]:
    suite = _suite_copy(ws, scratch)
    path = suite / "tasks" / "tasks.json"
    if case["action"] == "truncate":
        path.write_bytes(path.read_bytes()[: case["cut"]])
        return _suite_calls(suite, scratch, True)
    tasks = json.loads(path.read_text())
    try:
        tasks = edit_json(tasks, list(case["path"]), case["action"], case.get("value"))
    except (KeyError, IndexError, TypeError):
        return []
    path.write_bytes(dumps(tasks))
    return _suite_calls(suite, scratch, False)


def dumps(doc: Any) -> bytes:
    """JSON bytes, with every `{"deep": "DEEP-n"}` marker replaced by objects nested n deep (a
    depth no JSON library here would write) and lone surrogates written as they are."""
    spliced: dict[str, int] = {}

    def mark(value: Any) -> Any:
        if isinstance(value, dict):
            deep = value.get("deep")
            if len(value) == 1 and isinstance(deep, str) and deep.startswith("DEEP-"):
                key = f"__DEEP_{len(spliced)}__"
                spliced[key] = int(deep[5:])
                return key
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(doc), ensure_ascii=False)
    for key, n in spliced.items():
        text = text.replace(f'"{key}"', '{"a": ' * n + "{}" + "}" * n)
    return text.encode("utf-8", "surrogatepass")


def _apply_suite_toml(case: dict[str, Any], ws: Workspace, scratch: Path) -> list[Call]:
    suite = _suite_copy(ws, scratch)
    path = suite / "suite.toml"
    text = path.read_text()
    key = case["line"].split(" = ")[0]
    if case.get("garbage"):
        text = "\x00[[[" + text
    elif case["replace"]:
        text = "\n".join(line for line in text.splitlines() if not line.startswith(f"{key} ")) + "\n" + case["line"] + "\n"
    else:
        text += case["line"] + "\n"
    path.write_text(text)
    return _suite_calls(suite, scratch, False)


def _apply_domain(case: dict[str, Any], ws: Workspace, scratch: Path) -> list[Call]:
    suite = _suite_copy(ws, scratch)
    path = suite / "domain.py"
    text = path.read_text()
    marker = f"def {case['tool']}("
    head, _, rest = text.partition(marker)
    signature, _, body = rest.partition("\n")
    doc, _, after = body.partition("\n")  # the docstring line
    path.write_text(f"{head}{marker}{signature}\n{doc}\n    {case['body']}\n{after}")
    # every reference passes through cancel_order or find_customer; refund_order is in one task
    return _suite_calls(suite, scratch, bool(case["broken"]))


def _apply_agent(case: dict[str, Any], ws: Workspace, scratch: Path) -> list[Call]:
    if case["kind"] == "spec":
        spec = case["spec"]
    else:
        spec_file = scratch / "agent.toml"
        spec_file.write_bytes(bytes.fromhex(case["bytes"]) if case["kind"] == "binary" else case["toml"].encode())
        spec = str(spec_file)
    return [Call(["run", str(ws.suite), "--agent", spec, "-k", "1", "--quiet", "--tasks", "cancel-pending",
                  "--out", str(scratch / "out")], case["kind"] == "binary", [ws.suite])]


def _run_copy(ws: Workspace, scratch: Path) -> Path:
    run = scratch / "run"
    shutil.copytree(ws.run, run)
    return run


def _read_only_call(command: str, run: Path, ws: Workspace, scratch: Path, changed: bool) -> Call:
    out = scratch / "out"
    argv = {"report": ["report", str(run)], "view": ["view", str(run), "--out", str(scratch / "view.html")],
            "verify": ["verify", str(run)], "export": ["export", str(run), "--format", "jsonl", "--out", str(out)],
            "diff": ["diff", str(ws.run), str(run)],
            "leaderboard": ["leaderboard", str(run), "--out", str(out), "--bootstrap", "5"]}[command]
    return Call(argv, changed and command in ("verify", "leaderboard"), [run])


def _apply_run_dir(case: dict[str, Any], ws: Workspace, scratch: Path) -> list[Call]:
    run = _run_copy(ws, scratch)
    before = snapshot([run])
    if case["where"] == "manifest":
        manifest = json.loads((run / "run.json").read_text())
        path = case["key"].split(".")
        try:
            manifest = edit_json(manifest, path, "delete" if case["delete"] else "set", case["value"])
        except (KeyError, TypeError):
            return []
        (run / "run.json").write_bytes(dumps(manifest))
    elif case["where"] == "record":
        lines = read_log(run).splitlines()
        hits = [i for i, line in enumerate(lines) if json.loads(line).get("type") == case["type"]]
        if not hits:
            return []
        i = hits[case["nth"] % len(hits)]
        rec = json.loads(lines[i])
        rec = edit_json(rec, [case["key"]], "delete" if case["delete"] and case["key"] in rec else "set", case["value"])
        lines[i] = dumps(rec)
        write_log(run, b"\n".join(lines) + b"\n")
    else:
        lines = read_log(run).splitlines()
        at = {"end": len(lines), "start": 0, "middle": len(lines) // 2}[case["at"]]
        lines.insert(at, case["line"].encode("utf-8", "surrogateescape"))
        write_log(run, b"\n".join(lines) + b"\n")
    changed = snapshot([run]) != before
    return [_read_only_call(case["command"], run, ws, scratch, changed)]


def _apply_argv(case: dict[str, Any], ws: Workspace, scratch: Path) -> list[Call]:
    afile = scratch / "a-file"
    afile.write_text("not a directory")
    subst = {"{file}": str(afile), "{run}": str(ws.run), "{suite}": str(ws.suite), "{missing}": str(scratch / "missing")}
    positional = {"run": [str(ws.suite), "--agent", "sim:oracle", "--quiet"], "report": [str(ws.run)],
                  "diff": [str(ws.run), str(ws.run)], "view": [str(ws.run)], "verify": [str(ws.run)],
                  "export": [str(ws.run)], "leaderboard": [str(ws.run)], "validate": [str(ws.suite)],
                  "import": ["tau-bench", str(afile)], "replay": [str(ws.run)]}[case["command"]]
    argv = [case["command"], *positional]
    for flag, value in case["flags"]:
        argv += [flag, subst.get(value, value)]
    defaults = {"run": ["--out", str(scratch / "out"), "-k", "1"], "export": ["--format", "jsonl", "--out", str(scratch / "x")],
                "leaderboard": ["--out", str(scratch / "lb")], "import": ["--out", str(scratch / "imp")],
                "view": ["--out", str(scratch / "v.html")], "replay": ["--task", "cancel-pending", "-m", "1"]}
    for flag, value in zip(defaults.get(case["command"], [])[::2], defaults.get(case["command"], [])[1::2]):
        if flag not in argv:
            argv += [flag, value]
    watch = [ws.run] if case["command"] in READ_ONLY - {"validate"} else [ws.suite] if case["command"] == "validate" else []
    return [Call(argv, _broken_flags(case), watch, isolate=case["command"] in ("run", "replay"))]


NUMERIC_RUN_FLAGS = ("-k", "--timeout", "--max-steps", "--concurrency", "--retries", "--variants-per-family", "--seed",
                     "--bootstrap")
NOT_A_COUNT = ("-1", "0", "nan", "inf", "1e309", "", "x", "{file}", "{run}", "{suite}", "{missing}", "action")


def _broken_flags(case: dict[str, Any]) -> bool:
    """Is a flag given a value no command may accept (exit 0 would then be wrong)?"""
    for flag, value in case["flags"]:
        if flag in NUMERIC_RUN_FLAGS and value in NOT_A_COUNT and not (flag in ("--seed", "--retries", "--budget") and value == "0"):
            if not (flag == "--seed" and value == "-1"):
                return True
        if flag == "--out" and value in ("{file}", "{suite}") and case["command"] != "view":
            return True
        if flag in ("--overlay", "--baseline", "--suite") and value in ("{file}", "{missing}", "", "x", "1", "nan", "inf", "1e309",
                                                                       "-1", "0", "action"):
            return True
    return False


_APPLY: dict[str, Callable[[dict[str, Any], Workspace, Path], list[Call]]] = {
    "task": _apply_task, "suite_toml": _apply_suite_toml, "domain": _apply_domain, "agent": _apply_agent,
    "run_dir": _apply_run_dir, "argv": _apply_argv,
}


def run_case(case: dict[str, Any], ws: Workspace) -> list[Result]:
    return [check(case, call) for call in calls(case, ws)]


def corpus() -> list[dict[str, Any]]:
    """The crash reproducers (tests/fixtures/fuzz_corpus/*.json: a list of cases each)."""
    cases = []
    for path in sorted(CORPUS.glob("*.json")):
        for case in json.loads(path.read_text()):
            cases.append({**case, "from": path.name})
    return cases
