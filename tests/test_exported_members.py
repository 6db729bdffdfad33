"""The public face: `bench.__all__` is the documented API (docs/api.md), every name resolves to
the object its defining module holds, and `import bench` stays cheap."""

import importlib
import subprocess
import sys

import bench
from tests.conftest import ROOT

PUBLIC = [
    "Agent", "AgentSpec", "BenchError", "DivergenceOptions", "Episode", "EpisodeOver", "InfraError", "Observation",
    "Run", "RunConfig", "Suite", "Task", "ToolError", "Toolset", "VariantSpec", "VerifyResult", "__version__",
    "apply_overlay", "build_leaderboard", "diff", "divergence_section", "export_run", "load", "load_suite", "new_id",
    "parse_agent_spec", "parse_variant_spec", "report", "run", "verify", "write_leaderboard", "write_view",
]


def test_all_is_the_pinned_sorted_list():
    assert bench.__all__ == sorted(bench.__all__)
    assert bench.__all__ == PUBLIC


def test_every_name_resolves_to_its_defining_module():
    for name in bench.__all__:
        value = getattr(bench, name)
        if name == "__version__":
            assert isinstance(value, str)
            continue
        home = importlib.import_module(value.__module__)
        assert getattr(home, name) is value, name
        assert value.__module__.startswith("bench.") and name in dir(bench)


def test_every_name_is_documented():
    documented = (ROOT / "docs" / "api.md").read_text()
    assert [name for name in bench.__all__ if f"`{name}" not in documented] == []


def test_an_unknown_name_is_an_attribute_error():
    try:
        bench.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("bench.no_such_name resolved")


def test_import_bench_is_cheap():
    """The face loads its names on first use: importing it pulls in no numpy, scipy, tqdm,
    jsonschema or analysis module (the command line's start-up depends on it)."""
    code = ("import sys, bench; heavy = sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'scipy', 'tqdm', "
            "'jsonschema', 'rapidfuzz'}) + sorted(m for m in sys.modules if m.startswith('bench.')); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "['bench.__version__']"


def test_a_sim_run_imports_no_analysis(tmp_path):
    """`trajbench run` of a simulated agent pays for no scipy and no analysis module: the
    whole-process cost of a small run is its start-up (docs/performance.md)."""
    code = ("import sys; from bench.cli import main; "
            f"rc = main(['run', {str(ROOT / 'tests' / 'fixtures' / 'mini')!r}, '--agent', 'sim:oracle', '-k', '1', "
            f"'--out', {str(tmp_path / 'r')!r}, '--quiet']); "
            "print(rc, sorted({m.split('.')[0] for m in sys.modules} & {'scipy'}) + "
            "sorted(m for m in sys.modules if m.startswith('bench.analysis')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout + out.stderr
