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


@pytest.mark.parametrize("body, fragment", [
    ("raise SystemExit(0)", "tool cancel_order crashed: SystemExit"),  # a domain bug naming the tool
    ("return {1, 2}", ""),
])
def test_validate_with_misbehaving_tool_fails_loudly(mini_copy, body, fragment):
    _break_cancel(mini_copy, body)
    proc = run_cli("validate", str(mini_copy))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert fragment in proc.stderr
    assert proc.stderr.strip(), "a failure must say something"


def test_debug_shows_the_traceback(mini_copy):
    _break_cancel(mini_copy, "raise SystemExit(0)")
    proc = run_cli("--debug", "validate", str(mini_copy))
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "crashed: SystemExit" in proc.stderr
