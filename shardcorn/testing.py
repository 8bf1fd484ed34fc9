"""Helpers for testing shardcorn (and apps on it) against a real server on 127.0.0.1.

Two ways to run a server, both context managers that always stop what they started:

* :func:`serve_in_thread` runs one shard on its own loop in a background thread of the test
  process: quick to start, and the test can share objects with the app.
* :func:`serve_process` runs ``python -m shardcorn ...`` as a child process, exactly as a
  user would, and reads the port it bound from its log ("running on ..."), so port 0 works.

Readiness is an event (thread) or a log line (process), never a fixed sleep; every wait has
a timeout.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from shardcorn.config import Config
from shardcorn.loading import load_app
from shardcorn.logs import configure_logging
from shardcorn.metrics.stats import ShardStats
from shardcorn.shards.loops import new_event_loop
from shardcorn.shards.shard import Shard
from shardcorn.shards.sockets import bind_sockets

READY_LINE = re.compile(r"running on (https?)://(\[[^\]]+\]|[^:\s]+):(\d+)")
UNIX_READY_LINE = re.compile(r"running on (https?)://unix:(\S+)")


@dataclass
class ThreadServer:
    config: Config
    shard: Shard
    loop: asyncio.AbstractEventLoop
    port: int
    host: str
    stats: ShardStats
    exit_code: int | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.config.is_ssl else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def call(self, func: Any, *args: Any) -> None:
        """Run ``func(*args)`` on the server's loop thread."""
        self.loop.call_soon_threadsafe(func, *args)


@contextmanager
def serve_in_thread(app: Any, timeout: float = 10.0, **settings: Any) -> Iterator[ThreadServer]:
    """Serve ``app`` on 127.0.0.1 (port 0 unless given) in a thread; stop it on exit."""
    settings.setdefault("port", 0)
    settings.setdefault("log_level", "warning")
    config = Config(app=app, **settings)
    configure_logging(config.log_level, False, config.access_log, config.log_config)
    sockets = bind_sockets(config, 1)
    ready = threading.Event()
    stats = ShardStats()
    holder: dict[str, Any] = {}

    def main() -> None:
        loop = new_event_loop(config.loop)
        asyncio.set_event_loop(loop)
        holder["loop"] = loop
        shard = Shard(config, load_app(config), sockets, stats=stats)
        holder["shard"] = shard
        try:
            holder["code"] = loop.run_until_complete(shard.serve(ready.set))
        except BaseException as exc:  # surfaced to the test below
            holder["error"] = exc
        finally:
            ready.set()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    thread = threading.Thread(target=main, name="shardcorn-test-server", daemon=True)
    thread.start()
    try:
        if not ready.wait(timeout):
            raise TimeoutError("the test server did not become ready")
        if "error" in holder:
            raise holder["error"]
        if "code" in holder:
            raise RuntimeError(f"the test server exited at start with code {holder['code']}")
        name = sockets[0].getsockname()
        server = ThreadServer(
            config,
            holder["shard"],
            holder["loop"],
            port=name[1] if isinstance(name, tuple) else 0,
            host=name[0] if isinstance(name, tuple) else str(name),
            stats=stats,
        )
        yield server
    finally:
        loop = holder.get("loop")
        shard = holder.get("shard")
        if loop is not None and shard is not None and not loop.is_closed():
            with suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(shard.stop)
        thread.join(timeout + config.timeout_graceful_shutdown)
        for sock in sockets:
            sock.close()
        if thread.is_alive():
            raise TimeoutError("the test server did not stop")
    if "error" in holder:
        raise holder["error"]
    server.exit_code = holder.get("code")


@dataclass
class ProcessServer:
    proc: subprocess.Popen[bytes]
    scheme: str = "http"
    host: str = "127.0.0.1"
    port: int = 0
    uds: str | None = None
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def read_until(self, pattern: str, timeout: float = 10.0) -> str:
        """Read the server's log (stderr) until a line matches; return that line."""
        regex = re.compile(pattern)
        for line in self.output:
            if regex.search(line):
                return line
        deadline = time.monotonic() + timeout
        while True:
            next_line = self._read_line(deadline)
            if next_line is None:
                raise TimeoutError(
                    f"no log line matching {pattern!r} within {timeout}s; log so far:\n"
                    + "".join(self.output)
                )
            if regex.search(next_line):
                return next_line

    def _read_line(self, deadline: float) -> str | None:
        stream = self.proc.stderr
        assert stream is not None
        buffer = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            byte = os.read(stream.fileno(), 1)
            if not byte:
                if buffer:
                    break
                return None  # the process closed stderr (exited)
            buffer += byte
            if byte == b"\n":
                break
        if not buffer:
            return None
        line = buffer.decode("utf-8", "replace")
        self.output.append(line)
        return line

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for exit, collecting the rest of its log; return the exit code."""
        deadline = time.monotonic() + timeout
        while self._read_line(deadline) is not None:
            pass
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    @property
    def log(self) -> str:
        return "".join(self.output)


def shardcorn_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "shardcorn", *args]


@contextmanager
def serve_process(
    args: Sequence[str],
    *,
    ready: bool = True,
    timeout: float = 20.0,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Iterator[ProcessServer]:
    """Run ``python -m shardcorn *args`` (add ``--port 0`` yourself); stop it on exit.

    With ``ready`` (the default) this waits for the "running on" log line and fills in
    scheme, host and port. stdout (the access log) is discarded unless ``env`` asks otherwise.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        shardcorn_command(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    server = ProcessServer(proc)
    try:
        if ready:
            line = server.read_until(r"running on ", timeout)
            match = READY_LINE.search(line)
            unix = UNIX_READY_LINE.search(line)
            if unix is not None:
                server.scheme, server.uds = unix.group(1), unix.group(2)
            elif match is not None:
                server.scheme = match.group(1)
                server.host = match.group(2).strip("[]")
                server.port = int(match.group(3))
        yield server
    finally:
        stop_process(proc, stop_signal)


def stop_process(
    proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    """Stop a server process (and its process group): ``signum``, then SIGKILL."""
    if proc.poll() is None:
        try:
            proc.send_signal(signum)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None or _group_alive(proc.pid):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    if proc.stderr is not None:
        proc.stderr.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
