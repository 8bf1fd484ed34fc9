"""The servers under test: how each is started, probed for readiness and stopped.

Every server is started the way a person would start it from a shell, pinned with ``taskset``,
in its own session so that nothing it leaves behind can outlive the benchmark: on stop it gets
SIGTERM (a graceful shutdown), and whatever of its process tree is still alive after a grace
period gets SIGKILL, by pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from bench.procstat import process_tree

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

_STOP_GRACE_S = 10.0
_HELPER_EXIT_GRACE_S = 2.0
_STDERR_TAIL_LINES = 40


class ServerError(Exception):
    """A server exited, or never answered, before it was ready to be measured."""


@dataclass(frozen=True)
class ServerKind:
    """One server implementation and the fastest single-process way to run it."""

    name: str
    module: str  # imported to decide whether the server is installed
    # (app "module:attr", port) -> argv without taskset; the port is a str so that the report
    # can show the command with a "{port}" placeholder.
    argv: Callable[[str, str], list[str]]

    def command(self, app: str, port: int | str, extra: Sequence[str] = ()) -> list[str]:
        return [*self.argv(app, str(port)), *extra]


def _shardcorn_argv(app: str, port: str) -> list[str]:
    return [
        *(sys.executable, "-m", "shardcorn", app),
        *("--host", HOST, "--port", port),
        *("--no-access-log", "--log-level", "warning"),
    ]


def _uvicorn_argv(app: str, port: str) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", app),
        *("--host", HOST, "--port", port),
        *("--http", "httptools", "--loop", "uvloop"),
        *("--no-access-log", "--log-level", "warning"),
    ]


def _granian_argv(app: str, port: str) -> list[str]:
    # One worker process with a single-threaded Rust runtime: granian's fastest shape on one
    # core (the multi-threaded runtime only adds cross-thread handoffs when pinned to one CPU).
    return [
        *(sys.executable, "-m", "granian", "--interface", "asgi"),
        *("--host", HOST, "--port", port),
        *("--workers", "1", "--runtime-mode", "st", "--runtime-threads", "1"),
        *("--http", "1", "--loop", "uvloop", "--no-ws"),
        *("--no-access-log", "--log-level", "warning", app),
    ]


SHARDCORN = ServerKind("shardcorn", "shardcorn", _shardcorn_argv)
UVICORN = ServerKind("uvicorn", "uvicorn", _uvicorn_argv)
GRANIAN = ServerKind("granian", "granian", _granian_argv)


def server_env() -> dict[str, str]:
    """The environment servers run in: the repo root importable, so ``bench.apps`` resolves."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass(frozen=True)
class Availability:
    installed: bool
    version: str  # the version when installed, otherwise why it is missing


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=server_env(),
        timeout=60,
        check=False,
    )


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def probe(kind: ServerKind) -> Availability:
    """Import the server and run ``python -m <server> --help`` in fresh interpreters.

    A server whose package exists but whose command line does not run yet (a half-written
    shardcorn) is reported as missing once, instead of failing every measurement.
    """
    version = _python(
        "-c",
        f"import importlib, importlib.metadata as m; mod = importlib.import_module({kind.module!r})"
        "\ntry: print(m.version(mod.__name__))"
        "\nexcept m.PackageNotFoundError: print(getattr(mod, '__version__', 'unknown'))",
    )
    if version.returncode != 0:
        return Availability(False, _last_line(version))
    usage = _python("-m", kind.module, "--help")
    if usage.returncode != 0:
        return Availability(False, f"python -m {kind.module} --help: {_last_line(usage)}")
    return Availability(True, version.stdout.strip())


def free_port() -> int:
    """A TCP port nothing listens on now.

    A fresh port per server start matters with SO_REUSEPORT: a leftover process still bound to
    a reused port would silently take a share of the next server's connections.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(port: int, path: str = "/", timeout_s: float = 2.0) -> tuple[int, bytes]:
    """One ``Connection: close`` GET; returns (status, whole response). Raises OSError."""
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        sock.sendall(request.encode("ascii"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    status_line = response.split(b"\r\n", 1)[0].split()
    if (
        len(status_line) < 2
        or not status_line[0].startswith(b"HTTP/1.")
        or not status_line[1].isdigit()
    ):
        raise ConnectionError(f"not an HTTP/1 response: {response[:80]!r}")
    return int(status_line[1]), response


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_tail(self) -> str:
        lines = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-_STDERR_TAIL_LINES:])


def wait_until_answers(server: RunningServer, port: int, path: str, timeout_s: float) -> None:
    """Poll until ``port`` answers a GET for ``path`` with any HTTP status.

    There is no readiness signal common to every server, so this polls, with a deadline, and
    gives up at once if the server process has exited.
    """
    deadline = time.monotonic() + timeout_s
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise ServerError(
                f"exited with code {code} before it was ready:\n{server.stderr_tail()}"
            )
        try:
            http_get(port, path, timeout_s=1.0)
        except OSError as exc:
            last_error = str(exc) or type(exc).__name__
        else:
            return
        time.sleep(0.05)
    raise ServerError(
        f"port {port} did not answer GET {path} within {timeout_s:.0f} s ({last_error}):\n"
        f"{server.stderr_tail()}"
    )


def _still_running(pid: int, session: int) -> bool:
    """True if ``pid`` is alive (not a zombie) and still in the server's session.

    A pid reused since the tree was listed belongs to someone else, in another session.
    """
    try:
        if os.getsid(pid) != session:
            return False
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


def _stop(server: RunningServer) -> list[int]:
    """SIGTERM the server, then SIGKILL what is left of its tree; return the pids killed."""
    tree = process_tree(server.pid)
    if server.process.poll() is None:
        server.process.terminate()
    try:
        server.process.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    # Helpers such as multiprocessing's resource tracker exit a moment after the server does,
    # when they see its pipe close: give them that moment before calling them leftovers.
    deadline = time.monotonic() + _HELPER_EXIT_GRACE_S
    leftovers = [pid for pid in tree[1:] if _still_running(pid, server.pid)]
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.05)
        leftovers = [pid for pid in leftovers if _still_running(pid, server.pid)]
    for pid in leftovers:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leftovers


@contextmanager
def running(
    command: Sequence[str], port: int, ready_timeout_s: float = 30.0
) -> Iterator[RunningServer]:
    """Start ``command``, wait until ``port`` answers HTTP, yield, and always stop it."""
    with tempfile.TemporaryDirectory(prefix="shardcorn-bench-") as logs:
        stderr_path = Path(logs) / "stderr.log"
        with open(stderr_path, "wb") as stderr, open(Path(logs) / "stdout.log", "wb") as stdout:
            # Output goes to files, never to pipes nobody reads: a full pipe would stall the
            # server mid-benchmark.
            process = subprocess.Popen(
                list(command),
                cwd=REPO_ROOT,
                env=server_env(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        server = RunningServer(process, port, stderr_path)
        try:
            wait_until_answers(server, port, "/", ready_timeout_s)
            yield server
        finally:
            killed = _stop(server)
            if killed:
                # A server that leaves processes behind on SIGTERM has a shutdown bug.
                name = command[command.index("-m") + 1] if "-m" in command else command[0]
                print(
                    f"warning: {name} left processes {killed} running"
                    f" {_HELPER_EXIT_GRACE_S:.0f} s after it exited; killed them",
                    file=sys.stderr,
                )
