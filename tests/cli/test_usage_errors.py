"""click's usage errors (bad flag, bad value, missing argument): with --json, the JSON error envelope; exit 2 either way."""

from __future__ import annotations

import json

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import run

pytestmark = pytest.mark.one_backend

CASES = [  # (argv with --json, what click says, the command to ask for help); without --json for the text form
    (["ls", "--json", "--bogus"], "No such option '--bogus'", "hpcjup ls"),
    (
        ["start", "--local", "--json", "--nodes", "0"],
        "Invalid value for '-N' / '--nodes': 0 is not in the range x>=1",
        "hpcjup start",
    ),
    (["profile", "create", "--json"], "Missing argument 'NAME'", "hpcjup profile create"),
    (["logs", "--json", "-n"], "Option '-n' requires an argument", "hpcjup logs"),
    (["--bogus", "ls", "--json"], "No such option '--bogus'", "hpcjup"),
]


@pytest.mark.parametrize(("args", "said", "command"), CASES)
def test_with_json_a_usage_error_is_the_json_envelope(
    args: list[str], said: str, command: str, laptop_env: dict[str, str]
) -> None:
    result = run(args, laptop_env)
    assert result.returncode == ExitCode.USAGE, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # exactly one JSON object, nothing else on stdout
    error = json.loads(lines[0])["error"]
    assert set(error) == {"error", "message", "hint", "details", "exit_code"}
    assert error["error"] == "UsageError" and error["exit_code"] == 2
    assert said in error["message"]
    assert f"`{command} --help`" in error["hint"]
    assert f"error: {said}" in result.stderr  # the person at the terminal still reads it


@pytest.mark.parametrize(("args", "said", "command"), CASES)
def test_without_json_clicks_text_is_unchanged(
    args: list[str], said: str, command: str, laptop_env: dict[str, str]
) -> None:
    result = run([arg for arg in args if arg != "--json"], laptop_env)
    assert result.returncode == ExitCode.USAGE
    assert result.stdout == ""
    assert f"Error: {said}" in result.stderr and "hint:" not in result.stderr  # click's own form


def test_json_after_double_dash_is_an_argument(laptop_env: dict[str, str]) -> None:
    result = run(["ls", "--bogus", "--", "--json"], laptop_env)
    assert result.returncode == ExitCode.USAGE and result.stdout == ""
    assert "Error: No such option '--bogus'" in result.stderr
