"""Peer errors and limits: malformed requests get the right status and a closed connection,
and the app is never called for them. Every malformed case is also fed one byte at a time."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from shardcorn.metrics import stats as slots
from tests.protocol.memory import Client, connect, make_context, parse_responses

Message = dict[str, Any]


class CountingApp:
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})


MALFORMED = {
    "garbage": (b"GARBAGE\r\n\r\n", 400),
    "bad method": (b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "control char in target": (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "space in target": (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "header without colon": (b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),
    "space before colon": (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    "NUL in header value": (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    "missing host": (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    "two hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "bad content-length": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400),
    "two content-lengths": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    "content-length and chunked": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    # RFC 9112 6.3: chunked not the final coding is a framing error (400), while a coding
    # we do not implement before a final chunked is 501 (RFC 9112 6.1).
    "chunked not last": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        400,
    ),
    "unknown transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    ),
    "gzip then chunked": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "HTTP/2.0": (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    "HTTP/1.2": (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    "HTTP/3.0": (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    "HTTP/0.9 style": (b"GET / HTTP/0.9\r\n\r\n", 505),
}


def assert_refused(client: Client, status: int, app: CountingApp) -> None:
    response = client.read_response()
    assert response.status == status
    assert response.header(b"connection") == b"close"
    assert response.header(b"content-length") == str(len(response.body)).encode()
    client.wait_closed()
    assert app.paths == []
    assert client.unread() == b""  # exactly one response
    assert client.stats.bad_requests() == {status: 1}


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request(loop: asyncio.AbstractEventLoop, case: str, byte_by_byte: bool) -> None:
    request, status = MALFORMED[case]
    app = CountingApp()
    client = connect(loop, app)
    client.send(request, byte_by_byte)
    assert_refused(client, status, app)


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
def test_uri_too_long(loop: asyncio.AbstractEventLoop, byte_by_byte: bool) -> None:
    app = CountingApp()
    client = connect(loop, app, limit_request_line=100)
    client.send(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: a\r\n\r\n", byte_by_byte)
    assert_refused(client, 414, app)


def test_uri_at_the_limit_is_fine(loop: asyncio.AbstractEventLoop) -> None:
    app = CountingApp()
    client = connect(loop, app, limit_request_line=100)
    client.send(b"GET /" + b"a" * 99 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.read_response().status == 200
    client.close()


def test_default_request_line_limit(loop: asyncio.AbstractEventLoop) -> None:
    app = CountingApp()
    client = connect(loop, app)
    client.send(b"GET /" + b"a" * 8190 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert_refused(client, 414, app)


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
def test_too_many_header_fields(loop: asyncio.AbstractEventLoop, byte_by_byte: bool) -> None:
    app = CountingApp()
    client = connect(loop, app, limit_request_fields=5)
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(5))
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n", byte_by_byte)
    assert_refused(client, 431, app)


def test_default_field_limit_is_100(loop: asyncio.AbstractEventLoop) -> None:
    app = CountingApp()
    client = connect(loop, app)
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(99))
    client.send(b"GET /ok HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n")
    assert client.read_response().status == 200  # 100 fields with Host
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + headers + b"X-Last: v\r\n\r\n")
    response = client.read_response()
    assert response.status == 431
    client.wait_closed()


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
def test_headers_too_large(loop: asyncio.AbstractEventLoop, byte_by_byte: bool) -> None:
    app = CountingApp()
    client = connect(loop, app, limit_request_headers=1024)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 1100 + b"\r\n\r\n", byte_by_byte)
    assert_refused(client, 431, app)


def test_headers_just_under_the_limit(loop: asyncio.AbstractEventLoop) -> None:
    app = CountingApp()
    client = connect(loop, app, limit_request_headers=1024)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 900 + b"\r\n\r\n")
    assert client.read_response().status == 200
    client.close()


def test_large_head_in_many_pieces_is_not_double_counted(loop: asyncio.AbstractEventLoop) -> None:
    # 40 KiB of headers in 1 KiB pieces: under the 64 KiB default, so it must be served.
    app = CountingApp()
    client = connect(loop, app)
    head = (
        b"GET / HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%02d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
        + b"\r\n"
    )
    for i in range(0, len(head), 1024):
        client.send(head[i : i + 1024])
    assert client.read_response().status == 200
    client.close()


def test_endless_header_line_is_cut_off(loop: asyncio.AbstractEventLoop) -> None:
    # A single header line that never ends: httptools would buffer it without limit.
    app = CountingApp()
    client = connect(loop, app, limit_request_headers=1024, limit_request_line=100)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ")
    for _ in range(100):
        if client.closed:
            break
        client.send(b"v" * 512)
    response = client.read_response()
    assert response.status == 431
    client.wait_closed()
    assert app.paths == []


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
def test_malformed_after_valid_pipelined_requests(
    loop: asyncio.AbstractEventLoop, byte_by_byte: bool
) -> None:
    app = CountingApp()
    client = connect(loop, app)
    client.send(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
        b"BROKEN\r\n\r\n"
        b"GET /4 HTTP/1.1\r\nHost: a\r\n\r\n",
        byte_by_byte,
    )
    client.wait_closed()
    responses = parse_responses(client.output)
    assert [(r.status, r.body) for r in responses] == [
        (200, b"/1"),
        (200, b"/2"),
        (400, b"Bad Request"),
    ]
    assert app.paths == ["/1", "/2"]


def test_malformed_while_an_earlier_request_is_in_flight(loop: asyncio.AbstractEventLoop) -> None:
    gate = asyncio.Event()
    app = CountingApp()

    async def slow(scope: Message, receive: Any, send: Any) -> None:
        await gate.wait()
        await app(scope, receive, send)

    client = connect(loop, slow)
    client.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/9.9\r\n\r\n")
    client.spin()
    assert client.output == b"" and not client.closed  # the error waits its turn
    gate.set()
    client.wait_closed()
    statuses = [r.status for r in parse_responses(client.output)]
    assert statuses == [200, 505]


def test_broken_chunked_body_before_the_app_reads(loop: asyncio.AbstractEventLoop) -> None:
    app = CountingApp()
    client = connect(loop, app)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert_refused(client, 400, app)


def test_broken_chunked_body_while_the_app_reads(loop: asyncio.AbstractEventLoop) -> None:
    messages: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] == "http.disconnect":
                return

    client = connect(loop, app)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    client.run_until(lambda: len(messages) == 1)
    client.send(b"not-hex\r\n")
    response = client.read_response()
    assert response.status == 400
    client.wait_closed()
    client.run_until(lambda: messages[-1]["type"] == "http.disconnect")
    assert messages[0] == {"type": "http.request", "body": b"abc", "more_body": True}
    client.spin()
    assert client.ctx.requests_in_flight == 0


def test_limit_concurrency_answers_503_without_calling_the_app(
    loop: asyncio.AbstractEventLoop,
) -> None:
    gate = asyncio.Event()
    calls: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    ctx = make_context(loop, app, limit_concurrency=1)
    first = connect(loop, ctx=ctx)
    first.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
    first.run_until(lambda: calls == ["/1"])
    second = connect(loop, ctx=ctx)
    second.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    response = second.read_response()
    assert response.status == 503
    assert response.header(b"connection") == b"close"
    second.wait_closed()
    assert calls == ["/1"]
    assert first.stats.get(slots.CONCURRENCY_REJECTED) == 1
    gate.set()
    assert first.read_response().status == 200
    # With the first request done, the slot is free again.
    third = connect(loop, ctx=ctx)
    first.close()
    third.send(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert third.read_response().status == 200
    third.close()
    assert calls == ["/1", "/3"]


def test_limit_concurrency_counts_connections(loop: asyncio.AbstractEventLoop) -> None:
    app = CountingApp()
    ctx = make_context(loop, app, limit_concurrency=1)
    idle = connect(loop, ctx=ctx)  # open, no request
    busy = connect(loop, ctx=ctx)
    busy.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert busy.read_response().status == 503
    busy.wait_closed()
    idle.send(b"GET /y HTTP/1.1\r\nHost: a\r\n\r\n")
    assert idle.read_response().status == 200
    idle.close()
    assert app.paths == ["/y"]


def test_bad_request_is_logged_at_debug_only(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    app = CountingApp()
    client = connect(loop, app)
    client.send(b"GARBAGE\r\n\r\n")
    client.read_response()
    client.wait_closed()
    assert "Invalid HTTP request" not in logs.text  # a client's mistake is not our warning


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
def test_declared_body_over_the_limit_is_413(
    loop: asyncio.AbstractEventLoop, byte_by_byte: bool
) -> None:
    app = CountingApp()
    client = connect(loop, app, limit_request_body=10)
    client.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        byte_by_byte,
    )
    assert_refused(client, 413, app)  # before the body is even sent


def test_bodies_up_to_the_limit_are_fine(loop: asyncio.AbstractEventLoop) -> None:
    app = CountingApp()
    client = connect(loop, app, limit_request_body=10)
    client.send(b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
    assert client.read_response().status == 200
    client.send(
        b"POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n"
    )
    assert client.read_response().status == 200
    client.close()
    assert app.paths == ["/cl", "/te"]


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
def test_chunked_body_growing_over_the_limit_is_413(
    loop: asyncio.AbstractEventLoop, byte_by_byte: bool
) -> None:
    messages: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] == "http.disconnect" or not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    client = connect(loop, app, limit_request_body=10)
    client.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\n012345\r\n6\r\n678901\r\n0\r\n\r\n",
        byte_by_byte,
    )
    response = client.read_response()
    assert response.status == 413 and response.header(b"connection") == b"close"
    client.wait_closed()
    assert client.unread() == b""
    assert all(m["type"] == "http.disconnect" or len(m["body"]) <= 10 for m in messages)
    assert sum(len(m.get("body", b"")) for m in messages) <= 10


def test_response_timeout_answers_503(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    cancelled = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["path"] == "/fast":
            await CountingApp()(scope, receive, send)
            return
        try:
            await asyncio.sleep(30)
        finally:
            cancelled.set()

    client = connect(loop, app, timeout_response=0.1)
    client.send(b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\nGET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.read_response().status == 200
    response = client.read_response()
    assert response.status == 503 and response.header(b"connection") == b"close"
    client.wait_closed()
    client.run_until(cancelled.is_set)
    assert "--timeout-response" in logs.text
    assert "Exception in ASGI application" not in logs.text
    client.spin()
    assert client.stats.requests() == {("GET", 200): 1, ("GET", 503): 1}


def test_response_timeout_mid_body_closes(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await asyncio.sleep(30)

    client = connect(loop, app, timeout_response=0.1)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.wait_closed()
    assert client.output.endswith(b"1\r\nx\r\n")  # no clean end
    assert parse_responses(client.output) == []


def test_refusals_are_logged_at_debug(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    logging.getLogger("shardcorn.error").setLevel(logging.DEBUG)
    client = connect(loop, CountingApp())
    client.send(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n")
    client.read_response()
    client.wait_closed()
    (record,) = [r for r in logs.records if "Invalid HTTP request" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith("127.0.0.1:50000 - Invalid HTTP request (505):")
