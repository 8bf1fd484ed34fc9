"""Limits under attack: --limit-request-body (413), the request line (414), the head (431).

Bytes-in/bytes-out first (every way of cutting the bytes), then real sockets: a client that
sends its whole body before reading still gets its 413 (lingering close), and a client that
streams an endless request line or header is cut off near the limit, not after gigabytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shardcorn.protocol.linger import LINGER_BYTES
from shardcorn.testing import ThreadServer, serve_in_thread
from tests.hardening.servers import Raw
from tests.hardening.wire import FOLLOW, BodyReader, assert_refused, deliver, pieces
from tests.protocol.memory import connect, make_context

Message = dict[str, Any]
POST = b"POST /upload HTTP/1.1\r\nHost: a\r\n"


# -- --limit-request-body: 413 (RFC 9110 15.5.14) --------------------------------------------
def test_declared_length_over_the_limit_is_refused_before_the_app_runs(
    loop: asyncio.AbstractEventLoop,
) -> None:
    app = BodyReader()
    ctx = make_context(loop, app, limit_request_body=10)
    data = POST + b"Content-Length: 11\r\n\r\n" + b"x" * 11 + FOLLOW
    for label, parts in pieces(data):
        client = deliver(loop, ctx, parts)
        assert_refused(client, app, 413, label)
        assert app.calls == [], label  # refused at the head: the app is never called


def test_chunked_body_over_the_limit_is_cut_off_as_it_arrives(
    loop: asyncio.AbstractEventLoop,
) -> None:
    app = BodyReader()
    ctx = make_context(loop, app, limit_request_body=10)
    data = POST + b"Transfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n6\r\n678901\r\n0\r\n\r\n"
    for label, parts in pieces(data + FOLLOW):
        client = deliver(loop, ctx, parts)
        assert_refused(client, app, 413, label)
        assert all(len(body) <= 10 for body in app.bodies), label


def test_a_body_at_the_limit_is_served(loop: asyncio.AbstractEventLoop) -> None:
    app = BodyReader()
    client = connect(loop, app, limit_request_body=10)
    client.send(POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n")
    assert client.read_response().status == 200
    client.send(POST + b"Content-Length: 10\r\n\r\n0123456789")
    assert client.read_response().status == 200
    client.close()
    assert app.bodies == [b"0123456789"] * 2


# -- 414 and 431 under attack ---------------------------------------------------------------
def stream_until_refused(
    loop: asyncio.AbstractEventLoop, start: bytes, filler: bytes, **settings: Any
) -> tuple[int, int]:
    """Send ``start``, then ``filler`` over and over until the server closes; return (status,
    bytes sent). Gives up (fails) after 50 MB: the server must not read forever."""
    app = BodyReader()
    client = connect(loop, app, **settings)
    client.send(start)
    sent = len(start)
    while not client.closed and sent < 50_000_000:
        client.send(filler)
        sent += len(filler)
    response = client.read_response()
    client.wait_closed()
    assert app.calls == []
    return response.status, sent


def test_endless_request_line_is_cut_off_at_the_limit(loop: asyncio.AbstractEventLoop) -> None:
    status, sent = stream_until_refused(
        loop, b"GET /", b"a" * 1024, limit_request_line=8190, timeout_request_header=60
    )
    assert status == 414
    assert sent <= 8190 + 2 * 1024


def test_endless_header_line_is_cut_off_near_the_limit(loop: asyncio.AbstractEventLoop) -> None:
    # httptools would buffer one header line without end; the head's byte count stops it.
    status, sent = stream_until_refused(
        loop, b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ", b"v" * 4096, timeout_request_header=60
    )
    assert status == 431
    assert sent <= 65536 + 8190 + 2 * 4096


def test_endless_stream_of_small_headers_is_cut_off(loop: asyncio.AbstractEventLoop) -> None:
    status, sent = stream_until_refused(
        loop, b"GET / HTTP/1.1\r\nHost: a\r\n", b"X-A: b\r\n" * 16, timeout_request_header=60
    )
    assert status == 431
    assert sent <= 100 * 8 + 2 * 128  # --limit-request-fields 100


@pytest.mark.parametrize("status", [414, 431])
def test_limits_hold_however_the_bytes_arrive(loop: asyncio.AbstractEventLoop, status: int) -> None:
    app = BodyReader()
    if status == 414:
        ctx = make_context(loop, app, limit_request_line=64)
        data = b"GET /" + b"a" * 64 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    else:
        ctx = make_context(loop, app, limit_request_fields=4)
        data = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 4 + b"\r\n"
    for label, parts in pieces(data + FOLLOW):
        assert_refused(deliver(loop, ctx, parts), app, status, label)


def test_trailers_count_against_the_field_limit(loop: asyncio.AbstractEventLoop) -> None:
    app = BodyReader()
    ctx = make_context(loop, app, limit_request_fields=4)
    data = POST + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n" + b"X-T: v\r\n" * 5 + b"\r\n"
    for label, parts in pieces(data + FOLLOW):
        assert_refused(deliver(loop, ctx, parts), app, 431, label)


def test_trailers_are_not_added_to_the_scope(loop: asyncio.AbstractEventLoop) -> None:
    scopes: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        scopes.append(scope)
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    client = connect(loop, app)
    client.send(POST + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert client.read_response().status == 200
    client.close()
    assert [name for name, _ in scopes[0]["headers"]] == [b"host", b"transfer-encoding"]


# -- the same over real sockets ---------------------------------------------------------------
async def sink(scope: Message, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def limited(loop_name: str) -> Iterator[ThreadServer]:
    with serve_in_thread(sink, loop=loop_name, lifespan="off", limit_request_body=1000) as server:
        yield server


def test_a_client_that_sends_its_body_first_still_reads_the_413(limited: ThreadServer) -> None:
    # Without a lingering close the server would close with the body unread, the kernel would
    # answer the rest with a reset, and this client would never see the 413.
    client = Raw(limited.port)
    try:
        body = b"x" * (4 << 20)
        client.send(POST + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        response = client.response()
        assert response.status == 413
        assert response.header(b"connection") == b"close"
        assert client.closed_by_server()
    finally:
        client.close()


def test_expect_100_client_is_refused_before_it_sends_the_body(limited: ThreadServer) -> None:
    client = Raw(limited.port)
    try:
        client.send(POST + b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        response = client.response()  # the 413 itself, never a 100 first
        assert response.status == 413
        assert client.closed_by_server()
    finally:
        client.close()


def test_a_streamed_upload_over_the_limit_gets_413(limited: ThreadServer) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"y" * 100

    with httpx.Client(timeout=10) as http:
        response = http.post(limited.url + "/", content=chunks())
    assert response.status_code == 413


def test_an_endless_header_over_a_socket_is_cut_off(limited: ThreadServer) -> None:
    # Refused at ~72 KiB (431); then the lingering close drops at most LINGER_BYTES more before
    # it resets the connection. The kernel's socket buffers hold a few MiB besides.
    client = Raw(limited.port)
    try:
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ")
        sent = 0
        deadline = time.monotonic() + 10
        with pytest.raises(OSError):
            while time.monotonic() < deadline:
                client.send(b"v" * 16384)
                sent += 16384
        assert sent < LINGER_BYTES + (8 << 20)
    finally:
        client.close()
