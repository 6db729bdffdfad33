"""The built-in suites: valid, and shaped as promised (counts from the issue)."""

import pytest

from bench.runs.validate import validate_suite
from bench.world.suite import builtin_suites, load_suite

SUITES = ["calendar", "incident", "retail"]


def test_the_three_suites_are_built_in():
    assert builtin_suites() == SUITES


@pytest.mark.parametrize("name", SUITES)
def test_every_task_validates(name):
    suite = load_suite(name)
    assert [str(p) for p in validate_suite(suite)] == []


def test_suite_shape():
    tasks = [t for name in SUITES for t in load_suite(name).tasks]
    lengths = [len(t.reference_actions) for t in tasks]
    assert len(tasks) >= 90
    assert min(lengths) == 1 and max(lengths) >= 10
    assert sum(n >= 5 for n in lengths) >= len(tasks) / 3
    needs_user = [t for t in tasks if any(a.tool == "ask_user" for a in t.reference_actions)]
    assert len(needs_user) >= 15
    easy = [t for t in tasks if "easy" in t.tags and len(t.reference_actions) <= 3]
    assert len(easy) >= 15


def test_content_hash_tracks_every_scoring_file(mini_copy):
    before = load_suite(mini_copy).content_hash
    (mini_copy / "README.md").write_text("notes do not change scores")
    assert load_suite(mini_copy).content_hash == before
    for name in ("db.json", "policy.md", "domain.py", "tasks/tasks.json"):
        path = mini_copy / name
        original = path.read_text()
        path.write_text(original + "\n")
        assert load_suite(mini_copy).content_hash != before, name
        path.write_text(original)
    assert load_suite(mini_copy).content_hash == before
