"""--reload with a real watcher (watchfiles): edit a file of the app, see the new response.

Every wait is on a log line of the server (with a timeout), never a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx
import pytest
from watchfiles import Change

from shardcorn.shards.reload import SourceFilter
from shardcorn.testing import shardcorn_command
from tests.parity.helpers import error_lines, run_shardcorn, spawn, wait_ready, write_module

TIMEOUT = 20.0


def version(url: str) -> str:
    with httpx.Client() as client:
        result: str = client.get(url + "/").json()["version"]
    return result


def bump(app_file: Path, old: str, new: str) -> None:
    app_file.write_text(app_file.read_text().replace(f'VERSION = "{old}"', f'VERSION = "{new}"'))


def reload_args(app_dir: Path, *extra: str) -> list[str]:
    return shardcorn_command([
        "scopeapp:app", "--app-dir", str(app_dir), "--port", "0", "--reload",
        "--reload-dir", str(app_dir), "--reload-delay", "0.05", *extra,
    ])  # fmt: skip


def test_edit_restarts_with_the_new_code_on_the_same_port(app_dir: Path) -> None:
    with spawn(reload_args(app_dir)) as server:
        wait_ready(server, TIMEOUT)
        port = server.port
        assert version(server.url) == "v1"
        bump(app_dir / "scopeapp.py", "v1", "v2")
        line = server.read_until("detected changes", TIMEOUT)
        assert "scopeapp.py" in line
        server.output.clear()  # the next "running on" line is the new child's
        wait_ready(server, TIMEOUT)
        assert server.port == port  # the parent keeps the socket across restarts
        assert version(server.url) == "v2"
        server.send_signal(signal.SIGTERM)
        assert server.wait(TIMEOUT) == 0
    assert "forcing exit" not in server.log
    assert "Application shutdown complete" in server.log


def test_include_and_exclude_patterns(app_dir: Path) -> None:
    args = reload_args(app_dir, "--reload-include", "*.txt", "--reload-exclude", "skip_*.py")
    with spawn(args) as server:
        wait_ready(server, TIMEOUT)
        # Excluded first, included second: the change reported must be the included one
        # alone, which shows the excluded one was filtered out (no fixed wait needed).
        (app_dir / "skip_me.py").write_text("x = 1\n")
        (app_dir / "notes.txt").write_text("reload me\n")
        line = server.read_until("detected changes", TIMEOUT)
        assert "notes.txt" in line
        assert "skip_me.py" not in line
        server.output.clear()
        wait_ready(server, TIMEOUT)
        assert version(server.url) == "v1"


def test_ctrl_c_stops_parent_and_child_gracefully(app_dir: Path) -> None:
    with spawn(reload_args(app_dir), stop_signal=signal.SIGINT) as server:
        wait_ready(server, TIMEOUT)
        # Ctrl+C: the terminal signals the whole process group, child included.
        os.killpg(server.proc.pid, signal.SIGINT)
        assert server.wait(TIMEOUT) == 0
    assert "forcing exit" not in server.log
    assert "Application shutdown complete" in server.log
    assert "Stopping reloader process" in server.log


SLOW_APP = """
import asyncio
import sys


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    print("SLOW REQUEST STARTED", file=sys.stderr, flush=True)
    await asyncio.sleep(60)
"""


def test_second_signal_forces_the_child_out(tmp_path: Path) -> None:
    write_module(tmp_path, "slowapp", SLOW_APP)
    args = shardcorn_command([
        "slowapp:app", "--app-dir", str(tmp_path), "--port", "0", "--reload",
        "--reload-dir", str(tmp_path), "--lifespan", "off",
    ])  # fmt: skip
    errors: list[BaseException] = []

    def slow_request(url: str) -> None:
        try:
            httpx.get(url + "/", timeout=TIMEOUT)
        except httpx.HTTPError as exc:  # the forced exit drops the connection
            errors.append(exc)

    with spawn(args) as server:
        wait_ready(server, TIMEOUT)
        client = threading.Thread(target=slow_request, args=(server.url,))
        client.start()
        try:
            server.read_until("SLOW REQUEST STARTED", TIMEOUT)
            os.killpg(server.proc.pid, signal.SIGINT)  # Ctrl+C: graceful, the request waits
            server.read_until("shutting down gracefully", TIMEOUT)
            server.send_signal(signal.SIGINT)  # Ctrl+C again
            server.read_until("forcing exit", TIMEOUT)
            assert server.wait(TIMEOUT) == 0
        finally:
            client.join(TIMEOUT)
    assert len(errors) == 1


def test_a_broken_edit_is_survived(app_dir: Path) -> None:
    app_file = app_dir / "scopeapp.py"
    good = app_file.read_text()
    with spawn(reload_args(app_dir)) as server:
        wait_ready(server, TIMEOUT)
        app_file.write_text(good + "\ndef broken(:\n")
        server.read_until("SyntaxError", TIMEOUT)
        server.output.clear()
        app_file.write_text(good.replace('VERSION = "v1"', 'VERSION = "v3"'))
        wait_ready(server, TIMEOUT)
        assert version(server.url) == "v3"


def test_reload_with_more_than_one_shard_is_refused() -> None:
    result = run_shardcorn(["shardcorn.demo:app", "--reload", "--workers", "2"])
    assert result.returncode == 2
    assert error_lines(result) == ["Error: --reload cannot be combined with more than one shard"]


def test_missing_reload_dir(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    result = run_shardcorn(["shardcorn.demo:app", "--reload", "--reload-dir", str(missing)])
    assert result.returncode == 2
    assert f"--reload-dir {missing}: not a directory" in result.stderr


@pytest.mark.parametrize(
    ("includes", "excludes", "path", "restarts"),
    [
        ((), (), "/src/app.py", True),
        ((), (), "/src/.hidden.py", False),
        ((), (), "/src/notes.txt", False),
        (("*.txt",), (), "/src/notes.txt", True),
        ((), ("*.py",), "/src/app.py", False),  # excluding the default include drops it
        ((".*",), (), "/src/.env", True),  # including a default exclude drops that exclude
        ((), ("skip_*",), "/src/skip_this.py", False),
        ((), (), "/src/__pycache__/app.py", False),  # watchfiles' own default filter
    ],
)
def test_source_filter(
    includes: tuple[str, ...], excludes: tuple[str, ...], path: str, restarts: bool
) -> None:
    assert SourceFilter(includes, excludes)(Change.modified, path) is restarts


def test_source_filter_excluded_directory(tmp_path: Path) -> None:
    (tmp_path / "vendor").mkdir()
    source_filter = SourceFilter((), (str(tmp_path / "vendor"),))
    assert not source_filter(Change.modified, str(tmp_path / "vendor" / "lib.py"))
    assert source_filter(Change.modified, str(tmp_path / "app.py"))
