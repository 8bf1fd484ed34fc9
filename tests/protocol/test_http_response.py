"""Responses through the protocol: framing, default headers, header options, app mistakes."""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

import pytest

from tests.protocol.memory import Client, connect, make_context, parse_responses

Message = dict[str, Any]
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
HEAD = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"


def app_sending(*messages: Message) -> Any:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    return app


def start(status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> Message:
    return {"type": "http.response.start", "status": status, "headers": headers or []}


def body(data: bytes = b"", more: bool = False) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


def test_streaming_response_is_chunked(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, app_sending(start(), body(b"a", True), body(b"bc", True), body()))
    client.send(GET)
    response = client.read_response()
    assert response.chunked and response.body == b"abc"
    assert response.header(b"content-length") is None
    assert not client.closed
    client.close()


def test_streaming_with_content_length(loop: asyncio.AbstractEventLoop) -> None:
    headers = [(b"content-length", b"3")]
    client = connect(loop, app_sending(start(200, headers), body(b"a", True), body(b"bc")))
    client.send(GET)
    response = client.read_response()
    assert not response.chunked and response.body == b"abc"
    client.send(GET)  # the connection is reusable
    assert client.read_response().body == b"abc"
    client.close()


def test_streamed_pieces_are_written_as_they_are_sent(loop: asyncio.AbstractEventLoop) -> None:
    gate = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send(start())
        await send(body(b"first", True))
        await gate.wait()
        await send(body(b"second"))

    client = connect(loop, app)
    client.send(GET)
    client.run_until(lambda: client.output.endswith(b"5\r\nfirst\r\n"))
    gate.set()
    assert client.read_response().body == b"firstsecond"
    client.close()


def test_head_response_has_no_body(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, app_sending(start(200, [(b"content-length", b"5")]), body(b"hello")))
    client.send(HEAD + GET)
    head = client.read_response(head=True)
    assert head.header(b"content-length") == b"5" and head.body == b""
    get = client.read_response()
    assert get.body == b"hello"  # framing held: the HEAD answer carried no body bytes
    client.close()


def test_head_response_without_length_reports_the_body_length(
    loop: asyncio.AbstractEventLoop,
) -> None:
    client = connect(loop, app_sending(start(), body(b"hello")))
    client.send(HEAD)
    response = client.read_response(head=True)
    assert response.header(b"content-length") == b"5"
    assert client.unread() == b""
    client.close()


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(loop: asyncio.AbstractEventLoop, status: int) -> None:
    client = connect(loop, app_sending(start(status), body(b"dropped")))
    client.send(GET + GET)
    for _ in range(2):
        response = client.read_response()
        assert response.status == status
        assert response.header(b"transfer-encoding") is None
    assert client.unread() == b""
    client.close()


def test_server_and_date_headers(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, app_sending(start(), body(b"x")))
    client.send(GET)
    response = client.read_response()
    client.close()
    assert response.header(b"server") == b"shardcorn"
    date = response.header(b"date")
    assert date is not None
    parsed = email.utils.parsedate_to_datetime(date.decode())
    assert abs(parsed.timestamp() - time.time()) < 5


def test_date_header_is_cached_and_refreshed(loop: asyncio.AbstractEventLoop) -> None:
    ctx = make_context(loop, app_sending(start(), body()))
    cached = ctx.default_headers
    client = connect(loop, ctx=ctx)
    for _ in range(3):
        client.send(GET)
        client.read_response()
    assert all(r.raw_head.count(cached) == 1 for r in client.responses)  # no per-request work
    ctx.start_clock()
    try:
        # The clock re-renders the header on each new second.
        first = ctx.default_headers
        client.run_until(lambda: ctx.default_headers != first, timeout=3)
    finally:
        ctx.stop_clock()
    client.close()


def test_no_server_and_no_date_header(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, app_sending(start(), body(b"x")), server_header=False, date_header=False)
    client.send(GET)
    response = client.read_response()
    client.close()
    assert response.header_names() == [b"content-length"]


def test_extra_headers_option(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(
        loop, app_sending(start(), body(b"x")), headers=("X-Region: eu-1", "x-team:core")
    )
    client.send(GET)
    response = client.read_response()
    client.close()
    assert response.header(b"x-region") == b"eu-1"
    assert response.header(b"x-team") == b"core"
    assert response.header(b"server") == b"shardcorn"


def test_extra_server_header_replaces_ours(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, app_sending(start(), body()), headers=("Server: edge",))
    client.send(GET)
    response = client.read_response()
    client.close()
    assert [v for n, v in response.headers if n.lower() == b"server"] == [b"edge"]


def test_app_server_header_replaces_ours(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, app_sending(start(200, [(b"server", b"app")]), body()))
    client.send(GET)
    response = client.read_response()
    client.close()
    assert [v for n, v in response.headers if n.lower() == b"server"] == [b"app"]


def failing(client: Client, logs: pytest.LogCaptureFixture, needle: str) -> None:
    """The request got a 500 with Connection: close, and the app's error was logged."""
    response = client.read_response()
    assert response.status == 500
    assert response.header(b"connection") == b"close"
    client.wait_closed()
    assert needle in logs.text


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-evil", b"a\r\nSet-Cookie: x=1")],
        [(b"x-evil", b"a\nb")],
        [(b"x-evil", b"a\x00b")],
        [(b"bad name", b"v")],
        [(b"x:y", b"v")],
        [("x-str", "v")],
    ],
)
def test_bad_headers_answer_500_never_split(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture, headers: Any
) -> None:
    client = connect(loop, app_sending(start(200, headers), body(b"x")))
    client.send(GET)
    failing(client, logs, "Exception in ASGI application")
    assert b"Set-Cookie" not in client.output and b"x-evil" not in client.output
    assert len(parse_responses(client.output, eof=True)) == 1


def test_body_longer_than_content_length(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    client = connect(loop, app_sending(start(200, [(b"content-length", b"2")]), body(b"abc")))
    client.send(GET)
    failing(client, logs, "longer than its content-length")


def test_body_longer_than_content_length_after_start(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    app = app_sending(start(200, [(b"content-length", b"2")]), body(b"ab", True), body(b"c"))
    client = connect(loop, app)
    client.send(GET + GET)
    client.wait_closed()
    # The head and the declared bytes went out; then the connection was closed, so the
    # client sees a clean response but nothing else (the pipelined request is dropped).
    assert client.output.endswith(b"\r\n\r\nab")
    assert "longer than its content-length" in logs.text


def test_body_shorter_than_content_length(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    app = app_sending(start(200, [(b"content-length", b"5")]), body(b"ab", True), body(b""))
    client = connect(loop, app)
    client.send(GET)
    client.wait_closed()
    assert client.output.endswith(b"\r\n\r\nab")  # truncated: the client sees a short body
    assert "shorter than its content-length" in logs.text


def test_exception_before_start_is_500(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        raise ValueError("boom before start")

    client = connect(loop, app)
    client.send(GET)
    failing(client, logs, "boom before start")
    record = next(r for r in logs.records if r.exc_info)
    assert record.getMessage() == "Exception in ASGI application"
    assert "ValueError: boom before start" in logs.text  # the traceback


def test_exception_after_start_before_body_is_500(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send(start(201))
        raise ValueError("boom after start")

    client = connect(loop, app)
    client.send(GET)
    failing(client, logs, "boom after start")


def test_exception_after_body_started_closes_without_clean_end(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send(start())
        await send(body(b"partial", True))
        await asyncio.sleep(0)
        raise ValueError("boom mid-body")

    client = connect(loop, app)
    client.send(GET)
    client.wait_closed()
    assert client.output.endswith(b"7\r\npartial\r\n")  # no terminating 0-chunk
    assert parse_responses(client.output) == []
    assert "boom mid-body" in logs.text


def test_returning_without_a_response_is_500(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        return None

    client = connect(loop, app)
    client.send(GET)
    failing(client, logs, "returned without starting a response")


def test_returning_after_start_without_body_is_500(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    client = connect(loop, app_sending(start()))
    client.send(GET)
    failing(client, logs, "returned without completing the response")


def test_returning_mid_body_closes(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    client = connect(loop, app_sending(start(), body(b"x", True)))
    client.send(GET)
    client.wait_closed()
    assert parse_responses(client.output) == []
    assert "returned without completing the response" in logs.text


@pytest.mark.parametrize(
    "messages",
    [
        [body(b"x")],  # body before start
        [start(), start()],  # two starts
        [{"type": "http.response.bogus"}],
        [start(), {"type": "http.response.start", "status": 200}],
    ],
)
def test_asgi_message_misuse(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture, messages: list[Message]
) -> None:
    client = connect(loop, app_sending(*messages))
    client.send(GET)
    client.wait_closed()
    assert "Exception in ASGI application" in logs.text


def test_body_after_the_end_is_logged_and_the_response_stands(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    client = connect(loop, app_sending(start(), body(b"ok"), body(b"late")))
    client.send(GET)
    assert client.read_response().body == b"ok"
    client.run_until(lambda: "Exception in ASGI application" in logs.text)
    assert b"late" not in client.output
    client.send(GET)  # the response was complete and correct: the connection goes on
    assert client.read_response().body == b"ok"
    client.close()


def test_returning_a_value_is_logged(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> Any:
        await send(start())
        await send(body())
        return 42

    client = connect(loop, app)
    client.send(GET)
    assert client.read_response().status == 200
    client.close()
    assert "returned a value" in logs.text


def test_exception_in_pipelined_request_after_valid_ones(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["path"] == "/bad":
            raise RuntimeError("bad one")
        await send(start())
        await send(body(scope["path"].encode()))

    client = connect(loop, app)
    client.send(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /bad HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    client.wait_closed()
    responses = parse_responses(client.output)
    statuses = [(r.status, r.body) for r in responses]
    assert statuses == [(200, b"/1"), (500, b"Internal Server Error")]
    assert client.ctx.requests_in_flight == 0


def test_cancelled_error_from_the_app_is_an_app_error(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        raise asyncio.CancelledError

    client = connect(loop, app)
    client.send(GET)
    failing(client, logs, "Exception in ASGI application")


def test_write_backpressure_makes_send_wait(loop: asyncio.AbstractEventLoop) -> None:
    sent: list[int] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send(start())
        for i in range(3):
            await send(body(b"x", True))
            sent.append(i)
        await send(body())

    client = connect(loop, app)
    client.protocol.pause_writing()
    client.send(GET)
    client.spin()
    assert sent == []  # the first send() waits for the transport to drain
    client.protocol.resume_writing()
    client.read_response()
    assert sent == [0, 1, 2]
    client.close()
