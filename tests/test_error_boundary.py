"""The last-resort error boundary in `bench.cli.main`: user code that escapes every precise check
still ends as exit 2 with one message naming the command and its input, never a traceback and
never exit 0 (issue 15)."""

import pytest

from tests.conftest import run_cli


def _break_cancel(suite_dir, body):
    domain = (suite_dir / "domain.py").read_text()
    marker = '"""Cancel a pending order."""'
    assert marker in domain
    (suite_dir / "domain.py").write_text(domain.replace(marker, f"{marker}\n    {body}"))


@pytest.mark.parametrize("body, code, fragment", [
    # a domain bug names the tool, and validate's problem list names the task and reference step (exit 1)
    ("raise SystemExit(0)", 1, "reference_actions.2 (cancel_order): tool cancel_order crashed: SystemExit"),
    ("return {1, 2}", 1, "reference_actions.2 (cancel_order): tool cancel_order returned a value that is not JSON"),
])
def test_validate_with_misbehaving_tool_fails_loudly(mini_copy, body, code, fragment):
    _break_cancel(mini_copy, body)
    proc = run_cli("validate", str(mini_copy))
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert fragment in proc.stdout + proc.stderr
    assert proc.stderr.strip(), "a failure must say something"


def test_debug_shows_the_traceback(mini_copy):
    # a domain module that exits while it is imported: no precise check catches that, the boundary does
    (mini_copy / "domain.py").write_text((mini_copy / "domain.py").read_text() + "\nraise SystemExit(0)\n")
    proc = run_cli("--debug", "validate", str(mini_copy))
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "SystemExit" in proc.stderr
