"""Slow clients: a trickled head (408), a stalled body (408, the app sees http.disconnect),
and a client that does not read its response (send() waits; --timeout-write closes it).

The slow clients here send on a schedule (that is what makes them slow); every wait for the
server's reaction is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from shardcorn.config import Config
from shardcorn.protocol.cycle import BODY_HIGH_WATER
from shardcorn.testing import ThreadServer, serve_in_thread
from tests.hardening.servers import Raw
from tests.hardening.wire import BodyReader, only_response
from tests.protocol.memory import Client, connect, parse_responses

Message = dict[str, Any]


def trickle(client: Client, data: bytes, interval: float, stop: Callable[[], bool]) -> int:
    """Send ``data`` one byte every ``interval`` seconds until ``stop()``; bytes sent."""
    sent = 0

    async def run() -> None:
        nonlocal sent
        for i in range(len(data)):
            if stop() or client.transport.closing:
                return
            client.transport.receive_from_client(data[i : i + 1])
            sent += 1
            await asyncio.sleep(interval)  # the client's pace, not a wait for the server

    client.loop.run_until_complete(asyncio.wait_for(run(), 30))
    return sent


# -- the request head: an absolute deadline (RFC 9110 15.5.9, 408) ---------------------------
def test_a_trickled_head_gets_408_at_the_deadline_from_its_first_byte(
    loop: asyncio.AbstractEventLoop,
) -> None:
    app = BodyReader()
    client = connect(loop, app, timeout_request_header=0.3, timeout_keep_alive=30)
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Slow: " + b"s" * 400 + b"\r\n\r\n"
    started = loop.time()
    # One byte every 20 ms: a deadline that restarted with every byte would never expire.
    sent = trickle(client, head, 0.02, lambda: False)
    response = only_response(client)
    assert response.status == 408 and response.header(b"connection") == b"close"
    assert sent < len(head)
    assert loop.time() - started >= 0.3 - 0.01
    assert app.calls == []


# -- the request body: an idle timeout between reads ----------------------------------------
def test_a_stalled_body_gives_the_app_http_disconnect_and_the_client_408(
    loop: asyncio.AbstractEventLoop,
) -> None:
    messages: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] == "http.disconnect" or not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"too late"})

    client = connect(loop, app, timeout_request_body_idle=0.2)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    started = loop.time()
    response = only_response(client)
    assert response.status == 408 and response.header(b"connection") == b"close"
    assert loop.time() - started >= 0.2 - 0.01
    assert messages == [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.disconnect"},
    ]


def test_a_slow_but_steady_body_is_not_cut_off(loop: asyncio.AbstractEventLoop) -> None:
    app = BodyReader()
    client = connect(loop, app, timeout_request_body_idle=0.2)
    body = b"0123456789" * 3
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
    started = loop.time()
    trickle(client, body, 0.03, lambda: False)  # 0.9 s in all, never 0.2 s idle
    assert client.read_response().status == 200
    assert loop.time() - started > 0.2
    assert app.bodies == [body]
    client.close()


def test_time_the_app_does_not_read_is_not_the_clients(loop: asyncio.AbstractEventLoop) -> None:
    # The body is over the high-water mark, so the server stops reading until the app reads:
    # the client is blocked by us, and must not be timed out for it.
    go = asyncio.Event()
    received = bytearray()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await go.wait()
        while True:
            message = await receive()
            received.extend(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(received)})

    client = connect(loop, app, timeout_request_body_idle=0.1)
    size = 4 * BODY_HIGH_WATER
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
    client.send(b"x" * (size - 10))
    client.run_until(lambda: client.protocol.read_paused)
    until = loop.time() + 0.35
    client.run_until(lambda: loop.time() > until)  # three idle periods with reading paused
    assert not client.closed
    go.set()
    client.send(b"x" * 10)
    response = client.read_response()
    assert (response.status, response.body) == (200, b"%d" % size)
    client.close()


def test_a_client_waiting_for_100_continue_is_not_timed_out(
    loop: asyncio.AbstractEventLoop,
) -> None:
    go = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await go.wait()  # the app takes its time before it asks for the body
        await BodyReader()(scope, receive, send)

    client = connect(loop, app, timeout_request_body_idle=0.1)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    until = loop.time() + 0.35
    client.run_until(lambda: loop.time() > until)
    assert not client.closed and client.output == b""
    go.set()
    client.run_until(lambda: b"100 Continue" in client.output)
    client.send(b"abc")
    client.run_until(lambda: client.output.count(b"HTTP/1.1") == 2)
    assert parse_responses(client.output.split(b"\r\n\r\n", 1)[1])[0].status == 200
    client.close()


def test_a_stalled_body_after_the_response_just_closes(loop: asyncio.AbstractEventLoop) -> None:
    async def early(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"answered"})

    client = connect(loop, early, timeout_request_body_idle=0.1)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    response = only_response(client)  # one response: no 408 after the 200
    assert (response.status, response.body) == (200, b"answered")


# -- over real sockets -------------------------------------------------------------------------
def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.005)


class Streamer:
    """Streams up to ``total`` bytes in 64 KiB pieces; records its progress and whether the
    client went away (a second receive() in its own task says so)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.handed = 0  # bytes send() has accepted so far
        self.disconnected = threading.Event()

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        piece = b"z" * 65536
        await receive()  # the (empty) request body
        gone = asyncio.ensure_future(receive())  # says http.disconnect when the client goes
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while self.handed < self.total and not gone.done():
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            self.handed += len(piece)
        if gone.done():
            self.disconnected.set()
            return
        await send({"type": "http.response.body", "body": b""})
        gone.cancel()


def small_window_client(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def paused_connections(server: ThreadServer) -> bool:
    ctx = server.shard.ctx
    assert ctx is not None
    return any(getattr(c, "write_paused", False) for c in list(ctx.connections))


def test_a_client_that_does_not_read_holds_send_then_is_closed(loop_name: str) -> None:
    app = Streamer(1 << 30)
    with serve_in_thread(app, loop=loop_name, lifespan="off", timeout_write=0.5) as server:
        sock = small_window_client(server.port)
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            wait_for(lambda: paused_connections(server))
            paused_at, handed = time.monotonic(), app.handed
            assert app.disconnected.wait(10), "--timeout-write did not close the connection"
            waited = time.monotonic() - paused_at
            # Backpressure: send() stopped taking data, far short of the 1 GiB asked for.
            assert app.handed - handed <= 2 * 65536, (handed, app.handed)
            assert app.handed < 64 << 20
            assert waited >= 0.5 - 0.05
        finally:
            sock.close()


def test_a_slow_reader_is_not_closed(loop_name: str) -> None:
    app = Streamer(4 << 20)
    with serve_in_thread(app, loop=loop_name, lifespan="off", timeout_write=0.3) as server:
        sock = small_window_client(server.port)
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            wait_for(lambda: paused_connections(server))
            received = 0
            slow_until = time.monotonic() + 1.2  # four --timeout-write periods
            while not app.disconnected.is_set() and received < (4 << 20):
                data = sock.recv(65536)
                if not data:
                    break
                received += len(data)
                if time.monotonic() < slow_until:
                    time.sleep(0.05)  # the client's pace: a few KiB every 50 ms
            assert received >= 4 << 20  # the whole response arrived: never cut off
        finally:
            sock.close()


def test_a_stalled_body_over_a_socket_gets_408(loop_name: str) -> None:
    messages: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] == "http.disconnect" or not message["more_body"]:
                return

    with serve_in_thread(
        app, loop=loop_name, lifespan="off", timeout_request_body_idle=0.3
    ) as server:
        client = Raw(server.port)
        try:
            client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
            response = client.response()
            assert response.status == 408 and response.header(b"connection") == b"close"
            assert client.closed_by_server()
            wait_for(lambda: bool(messages) and messages[-1]["type"] == "http.disconnect")
        finally:
            client.close()


@pytest.mark.parametrize("setting", ["timeout_request_body_idle", "timeout_write"])
def test_the_new_timeouts_are_settings_with_defaults(setting: str) -> None:
    assert getattr(Config(app="m:a"), setting) == 60.0
    assert getattr(Config(app="m:a").replace(**{setting: None}), setting) is None
