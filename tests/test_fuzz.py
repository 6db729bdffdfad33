"""The fuzz campaign's fast slice (issue 15, item 7): the corpus of crash reproducers and a few
hypothesis-drawn hostile inputs per surface (task files, suite.toml, misbehaving domain code,
agent specs, run directories, CLI arguments), fed to every command in-process. Every answer
must keep tests/fuzzing.py's rules: no traceback, no crash in harness code, no exit 0 on broken
input, no change to the input of a read-only command. The long campaign is benchmarks/fuzz.py."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzzing

# examples per surface: the suite surfaces run `validate` (with its determinism subprocesses)
EXAMPLES = {"task": 3, "suite_toml": 3, "domain": 3, "agent": 6, "run_dir": 16, "argv": 4}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> fuzzing.Workspace:
    return fuzzing.Workspace(tmp_path_factory.mktemp("fuzz"))


def _assert_clean(results: list[fuzzing.Result]) -> None:
    for r in results:
        assert not r.violations, (r.case, r.argv, r.violations, r.stderr[-2000:])


@pytest.mark.parametrize("case", fuzzing.corpus(), ids=lambda c: f"{c['surface']}-{c.get('note', '')[:30] or c.get('command', '')}")
def test_corpus_reproducer(case: dict, workspace: fuzzing.Workspace) -> None:
    results = fuzzing.run_case(case, workspace)
    assert results, "a corpus case must make at least one call"
    _assert_clean(results)


def test_corpus_covers_every_surface() -> None:
    assert {c["surface"] for c in fuzzing.corpus()} == set(fuzzing.SURFACES)


@pytest.mark.parametrize("surface", fuzzing.SURFACES)
def test_hostile_inputs(surface: str, workspace: fuzzing.Workspace) -> None:
    @settings(max_examples=EXAMPLES[surface], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.randoms(use_true_random=False))
    def check(rng: random.Random) -> None:
        _assert_clean(fuzzing.run_case(fuzzing.generate(surface, rng), workspace))

    check()


def test_the_rules_catch_what_they_must(workspace: fuzzing.Workspace, tmp_path) -> None:
    """The checker itself can fail: an exit 0 on broken input, a changed input and a crash in
    harness code are each reported."""
    call = fuzzing.Call(["report", str(workspace.run)], must_fail=True)
    assert "exit 0 on broken input" in fuzzing.check({}, call).violations
    target = tmp_path / "watched"
    target.mkdir()
    (target / "f").write_text("x")
    call = fuzzing.Call(["view", str(workspace.run), "--out", str(target / "f")], watch=[target])
    assert "a read-only command changed its input" in fuzzing.check({}, call).violations
    stderr = ('Traceback (most recent call last):\n  File "/x/bench/analysis/report.py", line 75, in f\nTypeError: x\n'
              f"trajbench report: error: code run failed: TypeError: x {fuzzing.BOUNDARY}")
    assert fuzzing._crash_site(stderr) == "bench/analysis/report.py:75"
