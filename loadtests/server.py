"""Starting, probing and stopping the server under test, on loopback only."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from loadtests.exporter import Exporter, ExporterError
from loadtests.process import REPO_ROOT, child_env, kill_group, wait_group_gone

HOST = "127.0.0.1"
DEMO_APP = "shardcorn.demo:app"
# The server command is pluggable: ``--server-cmd`` or this variable replaces
# ``python -m shardcorn`` (the runner appends the app and its options either way), so the
# load tests can run against a stand-in that speaks the same options.
SERVER_CMD_ENV = "LOADTESTS_SERVER_CMD"


class ServerError(Exception):
    """The server did not start, died, or did not become ready in time."""


def default_server_cmd() -> list[str]:
    override = os.environ.get(SERVER_CMD_ENV)
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "shardcorn"]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on loopback a moment ago.

    The sockets are held open together until all are picked, so the kernel cannot hand the
    same port out twice; another process could still take one before the server binds it, in
    which case the server fails to start and says so.
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def server_argv(
    prefix: Sequence[str],
    *,
    app: str,
    port: int,
    shards: int,
    metrics_port: int,
    extra: Sequence[str] = (),
) -> list[str]:
    return [
        *prefix,
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        "--shards",
        str(shards),
        "--metrics-port",
        str(metrics_port),
        "--no-access-log",
        "--log-level",
        "warning",
        *extra,
    ]


class Server:
    """The server process, in its own process group so that its shards can be stopped too.
    :meth:`stop` may be called any number of times."""

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        # Why the last stop was not clean, or None if it was (or there was none).
        self.stop_problem: str | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            try:
                self._process = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT,
                    env=child_env(),
                    start_new_session=True,
                )
            except OSError as exc:
                raise ServerError(f"cannot start {shlex.join(self.argv)}: {exc}") from exc

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise ServerError(f"the server exited with code {self._process.returncode}")

    def wait_ready(self, base_url: str, exporter: Exporter, timeout: float) -> None:
        """Poll until the app answers ``GET /`` and the exporter answers a scrape.

        The probe is a real request, so it moves the request counter; the runner takes its
        "before" scrape only after the server is quiet again.
        """
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    status = client.get(base_url + "/").status_code
                    if status == 200:
                        exporter.scrape()
                        return
                    last_error = f"GET / answered {status}"
                except httpx.HTTPError as exc:
                    last_error = repr(exc)
                except ExporterError as exc:
                    last_error = str(exc)
                time.sleep(0.1)
        raise ServerError(f"the server was not ready after {timeout:g}s: {last_error}")

    def stop(self, timeout: float = 10.0, grace: float = 5.0) -> None:
        """SIGTERM to the main process (a graceful shutdown), then SIGKILL to the whole group.

        A clean stop is: the main process exits within ``timeout`` seconds, and every other
        process of its group within ``grace`` seconds more. Otherwise :attr:`stop_problem`
        says what was wrong (the processes left behind are the server's bug: lost shards).
        """
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop_problem = f"still running {timeout:g}s after SIGTERM"
        if self.stop_problem is None:
            left = wait_group_gone(process.pid, grace)
            if left:
                self.stop_problem = f"left {len(left)} processes running: " + "; ".join(left)
        kill_group(process.pid)
        process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
