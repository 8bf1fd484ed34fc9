"""Real servers and raw clients for the hardening suite: every socket operation has a timeout.

* :func:`serve_limited` runs ``python -m shardcorn`` in a child process under a chosen
  RLIMIT_NOFILE (through ``limited_server.py``), like :func:`shardcorn.testing.serve_process`.
* :class:`Raw` is a blocking socket with a timeout that reads whole responses.
* :func:`cpu_seconds` reads a process's CPU time from ``/proc``, to tell waiting from spinning.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from shardcorn.testing import READY_LINE, ProcessServer, stop_process
from tests.protocol.memory import Response
from tests.raw import RawClient

LIMITED_SERVER = str(Path(__file__).resolve().parent / "limited_server.py")
TIMEOUT = 10.0


@contextmanager
def serve_limited(
    args: Sequence[str],
    nofile: int,
    *,
    probe: float = 0.2,
    log_interval: float = 1.0,
    timeout: float = 30.0,
) -> Iterator[ProcessServer]:
    """Serve ``python -m shardcorn *args`` with RLIMIT_NOFILE ``nofile``; stop it on exit."""
    command = [sys.executable, LIMITED_SERVER, str(nofile), str(probe), str(log_interval)]
    proc = subprocess.Popen(
        [*command, "--", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    server = ProcessServer(proc)
    try:
        match = READY_LINE.search(server.read_until(r"running on ", timeout))
        assert match is not None, server.log
        server.port = int(match.group(3))
        yield server
    finally:
        stop_process(proc)


def wait_log(
    server: ProcessServer, pattern: str, count: int = 1, timeout: float = 20.0
) -> list[tuple[float, str]]:
    """Read the server's log until ``count`` lines match; (arrival time, line) for each."""
    regex = re.compile(pattern)
    found = [(0.0, line) for line in server.output if regex.search(line)]
    deadline = time.monotonic() + timeout
    while len(found) < count:
        line = server._read_line(deadline)
        if line is None:
            raise TimeoutError(f"wanted {count} lines matching {pattern!r}; log:\n{server.log}")
        if regex.search(line):
            found.append((time.monotonic(), line))
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The hardening tests' name for the shared raw client.
Raw = RawClient


def get(port: int, path: str = "/", timeout: float = TIMEOUT) -> Response:
    """One request on a fresh connection."""
    client = Raw(port, timeout=timeout)
    try:
        client.send(b"GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % path.encode())
        return client.response()
    finally:
        client.close()
