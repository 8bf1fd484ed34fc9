"""The runner's options and its exit status when the run cannot happen."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loadtests.process import REPO_ROOT
from loadtests.run import EXIT_BROKEN, EXIT_USAGE, parse_args
from loadtests.server import SERVER_CMD_ENV


def test_defaults_fit_two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVER_CMD_ENV, raising=False)
    args = parse_args([])
    assert (args.scenario, args.shards, args.users, args.run_seconds) == ("hello", 2, 20, 10)
    assert args.server_cmd == [sys.executable, "-m", "shardcorn"]


def test_server_command_is_pluggable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERVER_CMD_ENV, "python standin.py --flag")
    assert parse_args([]).server_cmd == ["python", "standin.py", "--flag"]
    assert parse_args(["--server-cmd", "other 'a b'"]).server_cmd == ["other", "a b"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--users", "0"],
        ["--users", "501"],
        ["--run-time", "11m"],
        ["--run-time", "0s"],
        ["--run-time", "soon"],
        ["--shards", "0"],
        ["--spawn-rate", "0"],
        ["--scenario", "nope"],
        ["--scenario", "limit", "--shards", "2", "--users", "4"],
    ],
)
def test_out_of_bounds_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        parse_args(argv)
    assert exc_info.value.code == EXIT_USAGE


def test_the_limit_scenario_has_users_enough_to_go_over_the_limit() -> None:
    args = parse_args(["--scenario", "limit", "--shards", "3", "--users", "7"])
    assert args.users == 7


def test_a_server_that_does_not_start_is_reported_with_its_log() -> None:
    server = f"{sys.executable} -c 'import sys; print(\"cannot start\"); sys.exit(2)'"
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.run", "--server-cmd", server, "--ready-timeout", "10"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_BROKEN, result.stderr
    assert "the server exited with code 2" in result.stderr
    assert "cannot start" in result.stderr
