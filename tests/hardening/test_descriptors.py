"""Running out of file descriptors, with real server processes under a lowered RLIMIT_NOFILE.

What the loops do on EMFILE (see shardcorn/shards/accept.py): asyncio stops polling the
listener for a second at a time, so connections wait in the accept queue; uvloop (libuv)
accepts and closes them with a spare descriptor, so they are turned away at once. Neither
spins, and shardcorn makes both say so once per interval. These tests check exactly that, and
that serving resumes when descriptors free up; then that a server with its limit raised holds
10,000 idle connections while requests keep flowing.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import time
from collections.abc import Iterator

import pytest

from tests.hardening.servers import Raw, cpu_seconds, get, serve_limited, wait_log

pytestmark = pytest.mark.slow

EXHAUSTED = r"cannot accept connections: Too many open files"
RECOVERED = r"file descriptors available again"


def hold_connections(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break  # uvloop turns the excess away; refused or reset is fine here
    return held


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_emfile_logs_once_per_interval_and_serving_resumes(loop_name: str) -> None:
    args = ["shardcorn.demo:app", "--port", "0", "--loop", loop_name, "--no-access-log"]
    # 64 descriptors: the server itself uses about 10-15, so ~50 connections exhaust it.
    with serve_limited([*args, "--timeout-keep-alive", "60"], 64, log_interval=1.0) as server:
        assert get(server.port).status == 200
        held = hold_connections(server.port, 80)
        try:
            # One warning per second while exhausted: three of them take at least two seconds
            # and cost almost no CPU (a busy loop would burn one core, and log thousands).
            first = wait_log(server, EXHAUSTED, 1)[-1][0]
            cpu_before = cpu_seconds(server.proc.pid)
            lines = wait_log(server, EXHAUSTED, 3)
            elapsed = lines[-1][0] - first
            cpu = cpu_seconds(server.proc.pid) - cpu_before
            assert elapsed >= 1.5, lines
            assert cpu < 0.5 * elapsed, (cpu, elapsed)
            warnings = [line for line in server.output if "cannot accept" in line]
            assert len(warnings) == 3, warnings
            assert "RLIMIT_NOFILE 64" in warnings[0]
            assert "Traceback" not in server.log  # asyncio's own report is filtered out
        finally:
            for sock in held:
                sock.close()
        wait_log(server, RECOVERED)
        deadline = time.monotonic() + 10
        for _ in range(20):
            assert get(server.port, timeout=max(1.0, deadline - time.monotonic())).status == 200


@contextlib.contextmanager
def raised_nofile(wanted: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_ten_thousand_idle_connections_while_requests_flow(loop_name: str) -> None:
    idle = 10_000
    args = [
        "shardcorn.demo:app",
        "--port",
        "0",
        "--loop",
        loop_name,
        "--no-access-log",
        "--backlog",
        "4096",
        "--timeout-keep-alive",  # idle connections stay as long as the test needs them
        "600",
    ]
    with raised_nofile(idle + 500), serve_limited(args, idle + 500) as server:
        held: list[socket.socket] = []
        try:
            for _ in range(idle):
                held.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            # Requests still flow, on fresh connections and on some of the idle ones.
            for _ in range(100):
                assert get(server.port).status == 200
            for sock in held[::100]:
                client = Raw.over(sock)
                client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                assert client.response().status == 200
            # And none of the idle ones was closed: not one is readable (EOF would be).
            with selectors.DefaultSelector() as selector:
                for sock in held:
                    selector.register(sock, selectors.EVENT_READ)
                assert selector.select(timeout=0) == []
        finally:
            for sock in held:
                sock.close()
