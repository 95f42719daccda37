"""Checks shared by the CLI tests."""

from __future__ import annotations

from click.testing import Result


def user_error(result: Result, fragment: str) -> None:
    """Failed as a user mistake: exit code 2, one stderr line naming `fragment`, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
