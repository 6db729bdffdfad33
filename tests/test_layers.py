"""The package's import layers, as a rule: the tree under bench/ stacks in the layers below, and
no module imports one above its own layer. A new module must be given a layer here (the test
fails until it is), which is the moment to decide where it belongs.

Every import counts, at module level or inside a function (the command line imports its
machinery lazily, but a lazy upward import is still an upward import)."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Bottom to top: a module may import its own layer and those below it. A layer is a list of
# module prefixes (a prefix covers the module and everything under it); `bench` alone is the
# public face, bench/__init__.py.
LAYERS: list[list[str]] = [
    ["bench.__version__", "bench.errors", "bench.canonical", "bench.schemas"],
    ["bench.world", "bench.domain"],  # what a suite is (bench.domain: the suites' stable import path)
    ["bench.episode"],  # the agent's contract and the step rules
    ["bench.adapters"],  # how an agent is reached (agent specs, option parsing, the adapters)
    ["bench.runs"],  # agents × tasks × k, and the run directory
    ["bench.imports"],  # importers of other harnesses' logs into run directories
    ["bench.analysis"],  # every figure, as data
    ["bench.publish", "bench.api"],  # what people read; the Python API
    ["bench.cli", "bench.cli_parser", "bench.pytest_plugin", "bench"],  # every print and exit code (and the
    # arguments they take); the fixture; the face
    ["bench.__main__"],
]

# Inside analysis/, bottom to top.
ANALYSIS_LAYERS: list[list[str]] = [
    ["bench.analysis.metrics", "bench.analysis.exact"],
    ["bench.analysis.divergence", "bench.analysis.regression", "bench.analysis.sequential",
     "bench.analysis.stopping", "bench.analysis.verdicts", "bench.analysis.replays"],
    ["bench.analysis.report", "bench.analysis.diff", "bench.analysis.planning"],
    ["bench.analysis.replay", "bench.analysis.verify_claims"],
    ["bench.analysis.prefix"],
    ["bench.analysis.causal"],
]


def _modules() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports."""
    files = {'.'.join(p.relative_to(ROOT).with_suffix('').parts).removesuffix('.__init__'): p
             for p in sorted((ROOT / "bench").rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bench":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in files else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "bench"}
        graph[name] = {d for d in deps if d != name}
    return graph


GRAPH = _modules()


def _layer(module: str, table: list[list[str]]) -> int | None:
    """The layer whose longest prefix covers the module (None: not in the table)."""
    best, best_len = None, -1
    for i, prefixes in enumerate(table):
        for prefix in prefixes:
            covers = module == prefix if prefix == "bench" else module == prefix or module.startswith(prefix + ".")
            if covers and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def test_every_module_has_a_layer():
    assert [m for m in GRAPH if _layer(m, LAYERS) is None] == []
    analysis = [m for m in GRAPH if m.startswith("bench.analysis.")]
    assert [m for m in analysis if _layer(m, ANALYSIS_LAYERS) is None] == []


@pytest.mark.parametrize("table", [LAYERS, ANALYSIS_LAYERS], ids=["package", "analysis"])
def test_no_module_imports_upward(table):
    upward = []
    for module, deps in GRAPH.items():
        mine = _layer(module, table)
        for dep in deps:
            theirs = _layer(dep, table)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} (layer {mine}) imports {dep} (layer {theirs})")
    assert upward == []


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(module: str, path: tuple[str, ...]) -> None:
        if state.get(module) == 2:
            return
        assert state.get(module) != 1, "import cycle: " + " -> ".join(path + (module,))
        state[module] = 1
        for dep in sorted(GRAPH[module]):
            visit(dep, path + (module,))
        state[module] = 2

    for module in sorted(GRAPH):
        visit(module, ())


def test_nothing_imports_the_cli_or_the_face():
    """The CLI is the top (only `python -m bench` runs it); the face is for users: inside the
    package every import names the module that defines what it needs."""
    assert [m for m, deps in GRAPH.items() if "bench.cli" in deps and m != "bench.__main__"] == []
    assert [m for m, deps in GRAPH.items() if "bench" in deps] == []


def test_analysis_never_renders():
    """Analysis returns data: it imports neither the renderers nor the command line."""
    offenders = [f"{m} -> {d}" for m, deps in GRAPH.items() if m.startswith("bench.analysis")
                 for d in deps if d.startswith(("bench.publish", "bench.cli", "bench.api"))]
    assert offenders == []


def test_the_tree_is_what_the_layers_say():
    """The wings are folders (a newcomer sees the layers in the file listing)."""
    for wing in ("world", "adapters", "runs", "analysis", "analysis/divergence", "publish"):
        assert (ROOT / "bench" / wing / "__init__.py").is_file(), wing
    assert Path(ROOT / "bench" / "py.typed").is_file()
