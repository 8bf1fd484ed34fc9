"""Faults with real processes and real sockets.

The supervisor's own suite covers the server side of dying shards: a SIGKILLed shard fails at
most its own in-flight requests under load and is replaced
(tests/shards/test_supervisor.py::test_sigkill_of_a_shard_fails_only_its_requests_and_it_is_replaced),
and a SIGSTOPped shard fails its health check, is replaced, and the connections queued for it
are served (::test_a_stopped_process_fails_its_health_check_and_its_queue_is_served). Here:
what the clients *of* the killed or stopped shard see (a prompt end, never a hang, while the
other shard's requests complete), clients that reset mid-response, and an app that never
answers (--timeout-response).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from shardcorn.testing import ProcessServer, ThreadServer, serve_in_thread, serve_process
from tests.hardening.servers import Raw, get, wait_log

Message = dict[str, Any]
HERE = str(Path(__file__).resolve().parent)


# -- shards that die or stop under clients ---------------------------------------------------
@contextlib.contextmanager
def two_shards(*extra: str) -> Iterator[ProcessServer]:
    args = ["faultapp:app", "--app-dir", HERE, "--port", "0", "--shards", "2"]
    with serve_process([*args, "--shard-mode", "process", "--no-access-log", *extra]) as server:
        yield server


def sleep_request(port: int, ms: int) -> tuple[float, int | str]:
    """GET /sleep on a fresh connection: (when it ended, the answering pid or the error)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", f"/sleep?ms={ms}")
        response = conn.getresponse()
        body = response.read()
        return time.monotonic(), int(body) if response.status == 200 else f"{response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return time.monotonic(), type(exc).__name__
    finally:
        conn.close()


def in_flight(server: ProcessServer, count: int) -> tuple[list[Future[tuple[float, Any]]], Any]:
    pool = ThreadPoolExecutor(count)
    futures = [pool.submit(sleep_request, server.port, 4000) for _ in range(count)]
    starts = wait_log(server, r"sleep-start \d+", count, timeout=30)
    pids = [int(line.split()[-1]) for _, line in starts]
    return futures, (pool, pids)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_clients_of_a_dead_shard_end_promptly_and_the_others_are_served(fault: str) -> None:
    with two_shards("--timeout-worker-healthcheck", "1") as server:
        futures, (pool, pids) = in_flight(server, 12)
        with pool:
            victim = max(set(pids), key=pids.count)
            survivors = set(pids) - {victim}
            hit = pids.count(victim)
            struck = time.monotonic()
            os.kill(victim, signal.SIGKILL if fault == "SIGKILL" else signal.SIGSTOP)
            results = [future.result(timeout=40) for future in futures]
        failed = [(end, what) for end, what in results if not isinstance(what, int)]
        served = [what for _, what in results if isinstance(what, int)]
        # The victim's clients get a reset or a close: at once for SIGKILL, once the health
        # check has replaced a stopped shard for SIGSTOP; never their 30-second timeout. (On a
        # very slow machine one of them may have finished before the signal: at most ``hit``.)
        assert 1 <= len(failed) <= hit, results
        assert all(end - struck < 15 for end, _ in failed), results
        assert len(served) == 12 - len(failed)
        assert sum(pid in survivors for pid in served) == 12 - hit
        reason = "crash" if fault == "SIGKILL" else "healthcheck"
        wait_log(server, rf"Shard \d replaced \({reason}\)", timeout=30)
        assert {get(server.port, "/pid").status for _ in range(20)} == {200}
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


# -- clients that reset mid-response -----------------------------------------------------------
class LongStream:
    """Streams 8 MiB per request; counts the requests whose client went away."""

    def __init__(self) -> None:
        self.gone = 0
        self.done = threading.Condition()

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/small":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await receive()
        gone = False
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(128):
            await send({"type": "http.response.body", "body": b"r" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        message = await receive()  # after the response (or the reset): http.disconnect
        gone = message["type"] == "http.disconnect"
        with self.done:
            self.gone += gone
            self.done.notify_all()


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_clients_resetting_mid_response_leave_the_shard_serving(loop_name: str) -> None:
    app = LongStream()
    with serve_in_thread(app, loop=loop_name, lifespan="off") as server:
        errors = Collect()
        logging.getLogger("shardcorn.error").addHandler(errors)
        try:
            for _ in range(20):
                client = Raw(server.port)
                client.send(b"GET /long HTTP/1.1\r\nHost: a\r\n\r\n")
                while len(client.buffer) < 100_000:
                    assert client.recv_some()
                reset(client.sock)
            with app.done:
                assert app.done.wait_for(lambda: app.gone == 20, timeout=20), app.gone
            assert get(server.port, "/small").status == 200
            ctx = server.shard.ctx
            assert ctx is not None
            deadline = time.monotonic() + 10
            while ctx.requests_in_flight or len(ctx.connections) > 0:
                assert time.monotonic() < deadline, (ctx.requests_in_flight, ctx.connections)
                time.sleep(0.01)
        finally:
            logging.getLogger("shardcorn.error").removeHandler(errors)
        assert [r.getMessage() for r in errors.records if r.levelno >= logging.ERROR] == []


def test_a_reset_before_the_response_is_not_an_error(loop_name: str) -> None:
    app = LongStream()
    with serve_in_thread(app, loop=loop_name, lifespan="off") as server:
        for _ in range(20):
            client = Raw(server.port)
            client.send(b"GET /long HTTP/1.1\r\nHost: a\r\n\r\n")
            reset(client.sock)
        with app.done:
            assert app.done.wait_for(lambda: app.gone == 20, timeout=20), app.gone
        assert get(server.port, "/small").status == 200


# -- an app that never answers -----------------------------------------------------------------
class Hangs:
    def __init__(self) -> None:
        self.cancelled = threading.Event()

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            if scope["path"] == "/midway":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"half", "more_body": True})
            await asyncio.Event().wait()  # forever
        finally:
            self.cancelled.set()


@pytest.fixture
def hanging(loop_name: str) -> Iterator[tuple[ThreadServer, Hangs]]:
    app = Hangs()
    with serve_in_thread(app, loop=loop_name, lifespan="off", timeout_response=0.3) as server:
        yield server, app


def test_an_app_that_never_answers_gets_503(hanging: tuple[ThreadServer, Hangs]) -> None:
    server, app = hanging
    started = time.monotonic()
    response = get(server.port, "/hang")
    assert response.status == 503 and response.header(b"connection") == b"close"
    assert time.monotonic() - started >= 0.3 - 0.01
    assert app.cancelled.wait(10)  # the app's task is cancelled, not left running


def test_an_app_that_stops_midway_is_cut_off(hanging: tuple[ThreadServer, Hangs]) -> None:
    server, app = hanging
    client = Raw(server.port)
    try:
        client.send(b"GET /midway HTTP/1.1\r\nHost: a\r\n\r\n")
        assert client.closed_by_server()
        assert client.buffer.endswith(b"4\r\nhalf\r\n")  # no last chunk: visibly truncated
    finally:
        client.close()
    assert app.cancelled.wait(10)


@pytest.mark.slow
def test_timeout_response_from_the_command_line() -> None:
    args = ["faultapp:app", "--app-dir", HERE, "--port", "0", "--timeout-response", "0.5"]
    with serve_process(args) as server:
        assert get(server.port, "/hang").status == 503
        assert get(server.port, "/sleep?ms=10").status == 200
        wait_log(server, r"no complete response after 0\.5s \(--timeout-response\)")
