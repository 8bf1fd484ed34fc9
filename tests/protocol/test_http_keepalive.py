"""Keep-alive, pipelining, Connection: close, and the timers that close idle connections."""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

import pytest

from shardcorn.metrics import stats as slots
from tests.protocol.memory import connect, parse_responses

Message = dict[str, Any]
GET = b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n"


async def echo_path(scope: Message, receive: Any, send: Any) -> None:
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def slow_echo_path(scope: Message, receive: Any, send: Any) -> None:
    # Answers later requests faster than earlier ones: order must still be kept.
    n = int(scope["path"][1:] or 0)
    for _ in range(10 - n):
        await asyncio.sleep(0)
    await echo_path(scope, receive, send)


def test_http11_keeps_alive_by_default(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, echo_path)
    for i in range(3):
        client.send(GET % i)
        response = client.read_response()
        assert response.body == b"/%d" % i
        assert response.header(b"connection") is None
    assert not client.closed
    assert client.stats.get(slots.KEEPALIVE_REUSED) == 2
    client.close()


def test_http10_closes_after_the_response(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, echo_path)
    client.send(b"GET /x HTTP/1.0\r\n\r\n")
    response = client.read_response()
    assert response.body == b"/x"
    assert response.header(b"connection") == b"close"
    client.wait_closed()


def test_http10_with_keep_alive_stays_open(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, echo_path)
    for path in (b"/a", b"/b"):
        client.send(b"GET %s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % path)
        response = client.read_response()
        assert response.body == path
        assert response.header(b"connection") == b"keep-alive"
    assert not client.closed
    client.close()


def test_http10_streamed_response_closes(loop: asyncio.AbstractEventLoop) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    client = connect(loop, app)
    client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    client.wait_closed()
    response = client.read_response()  # read to EOF: no length, no chunking in 1.0
    assert response.body == b"ab"
    assert response.header(b"connection") == b"close"


def test_client_connection_close_is_honoured(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, echo_path)
    client.send(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    response = client.read_response()
    assert response.header(b"connection") == b"close"
    client.wait_closed()


def test_app_connection_close_is_honoured(loop: asyncio.AbstractEventLoop) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        headers = [(b"Connection", b"close")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"bye"})

    client = connect(loop, app)
    client.send(GET % 1 + GET % 2)  # the second is never answered
    response = client.read_response()
    assert response.body == b"bye"
    assert response.raw_head.lower().count(b"connection:") == 1
    client.wait_closed()
    assert len(parse_responses(client.output)) == 1


@pytest.mark.parametrize("app", [echo_path, slow_echo_path])
def test_pipelined_requests_answered_in_order(loop: asyncio.AbstractEventLoop, app: Any) -> None:
    client = connect(loop, app)
    client.send(b"".join(GET % i for i in range(10)))
    bodies = [client.read_response().body for _ in range(10)]
    assert bodies == [b"/%d" % i for i in range(10)]
    client.close()


def test_pipelined_requests_byte_by_byte(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, slow_echo_path)
    client.send(b"".join(GET % i for i in range(4)), byte_by_byte=True)
    assert [client.read_response().body for _ in range(4)] == [b"/%d" % i for i in range(4)]
    client.close()


def test_a_long_pipelined_burst_does_not_recurse(loop: asyncio.AbstractEventLoop) -> None:
    # Thousands of pipelined requests in one read, each answered without waiting: each
    # launch must not nest inside the previous app's send().
    count = 3000
    client = connect(loop, echo_path)
    client.send(b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n" * count)
    client.run_until(lambda: client.output.count(b"HTTP/1.1 200") == count, timeout=30)
    assert len(parse_responses(client.output)) == count
    client.close()


def test_pipelined_requests_get_fresh_contexts(loop: asyncio.AbstractEventLoop) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        seen.append(var.get())
        var.set(scope["path"])
        await echo_path(scope, receive, send)

    client = connect(loop, app)
    client.send(GET % 1 + GET % 2 + GET % 3)
    for _ in range(3):
        client.read_response()
    client.close()
    assert seen == ["unset"] * 3


def test_pipelined_after_connection_close_request_is_dropped(
    loop: asyncio.AbstractEventLoop,
) -> None:
    calls: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await echo_path(scope, receive, send)

    client = connect(loop, app)
    client.send(
        b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    client.wait_closed()
    assert [r.body for r in parse_responses(client.output)] == [b"/1"]
    assert calls == ["/1"]


def test_keep_alive_timeout_closes_an_idle_connection(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, echo_path, timeout_keep_alive=0.05)
    client.send(GET % 1)
    client.read_response()
    start = time.monotonic()
    client.wait_closed()
    assert time.monotonic() - start >= 0.04
    assert client.stats.get(slots.KEEPALIVE_TIMEOUTS) == 1


def test_keep_alive_timeout_before_any_request(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, echo_path, timeout_keep_alive=0.05)
    client.wait_closed()
    assert client.output == b""


def test_keep_alive_timer_not_running_while_a_request_is_served(
    loop: asyncio.AbstractEventLoop,
) -> None:
    gate = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await gate.wait()
        await echo_path(scope, receive, send)

    client = connect(loop, app, timeout_keep_alive=0.05)
    client.send(GET % 1)
    deadline = time.monotonic() + 0.2
    client.run_until(lambda: time.monotonic() > deadline)
    assert not client.closed  # well past the keep-alive timeout, but busy
    gate.set()
    client.read_response()
    client.wait_closed()  # idle again: now the timer runs


def test_keep_alive_timer_armed_after_the_body_of_an_answered_request(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # The app answers before the request body has arrived; once the rest of the body has
    # been read (and dropped), the connection is idle and must time out.
    client = connect(loop, echo_path, timeout_keep_alive=0.05)
    client.send(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabc")
    assert client.read_response().body == b"/x"
    assert client.protocol.keepalive_handle is None  # the body is still coming
    client.send(b"def")
    client.wait_closed()


def test_leading_empty_lines_keep_the_timer(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, echo_path, timeout_keep_alive=0.05)
    client.send(GET % 1)
    client.read_response()
    client.send(b"\r\n")  # allowed before a request line (RFC 9112 2.2)
    client.wait_closed()


def test_request_head_timeout_answers_408(loop: asyncio.AbstractEventLoop) -> None:
    calls: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await echo_path(scope, receive, send)

    client = connect(loop, app, timeout_request_header=0.1, timeout_keep_alive=30)
    client.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n")  # the head never ends
    response = client.read_response()
    assert response.status == 408
    assert response.header(b"connection") == b"close"
    client.wait_closed()
    assert calls == []


def test_request_head_timeout_after_a_pipelined_request(loop: asyncio.AbstractEventLoop) -> None:
    gate = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await gate.wait()
        await echo_path(scope, receive, send)

    client = connect(loop, app, timeout_request_header=0.1)
    client.send(GET % 1 + b"GET /2 HTTP/1.1\r\nHo")
    deadline = time.monotonic() + 0.3
    client.run_until(lambda: time.monotonic() > deadline)
    assert client.output == b""  # the 408 waits for the response before it
    client.send(b"st: a\r\n\r\n")  # too late: not parsed any more
    gate.set()
    first = client.read_response()
    second = client.read_response()
    assert (first.status, first.body) == (200, b"/1")
    assert second.status == 408
    client.wait_closed()


def test_stats_count_reused_connections(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, echo_path)
    client.send(GET % 1)
    client.read_response()
    client.send(GET % 2)
    client.read_response()
    client.close()
    client.spin()
    assert client.stats.get(slots.KEEPALIVE_REUSED) == 1
    assert client.ctx.requests_in_flight == 0


@pytest.mark.parametrize("ws", ["auto", "none"])
def test_upgrade_we_do_not_perform_is_served_then_closed(
    loop: asyncio.AbstractEventLoop, ws: str
) -> None:
    calls: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await echo_path(scope, receive, send)

    client = connect(loop, app, ws=ws)
    upgrade = b"h2c" if ws == "auto" else b"websocket"
    client.send(
        b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: %s\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        b"\x00\x01 these bytes are not HTTP" % upgrade
    )
    response = client.read_response()
    assert response.body == b"/up"
    assert response.header(b"connection") == b"close"
    client.wait_closed()
    assert calls == ["/up"]
