"""Every launched request is counted as finished exactly once, whatever way it ends, and the
gauges (requests in flight, open and idle connections) come back to zero."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shardcorn.metrics import stats as slots
from tests.protocol.memory import Client, connect

Message = dict[str, Any]
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def settled(client: Client) -> dict[tuple[str, int], int]:
    """After the connection is gone: the gauges are zero; return the request counts."""
    client.spin()
    stats = client.stats
    assert client.ctx.requests_in_flight == 0
    assert stats.get(slots.REQUESTS_IN_FLIGHT) == 0
    assert stats.get(slots.CONNECTIONS_OPEN) == 0
    assert stats.get(slots.KEEPALIVE_IDLE) == 0
    assert sum(stats.duration_buckets()) == sum(stats.requests().values())
    return stats.requests()


async def ok(scope: Message, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_normal_requests(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, ok)
    client.send(GET + b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.read_response()
    client.read_response(head=True)
    client.close()
    assert settled(client) == {("GET", 200): 1, ("HEAD", 200): 1}


def test_error_before_start(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        raise ValueError

    client = connect(loop, app)
    client.send(GET)
    client.wait_closed()
    assert settled(client) == {("GET", 500): 1}


def test_error_after_a_complete_response(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await ok(scope, receive, send)
        raise ValueError("after the end")

    client = connect(loop, app)
    client.send(GET)
    client.read_response()
    client.run_until(lambda: "after the end" in logs.text)
    client.close()
    assert settled(client) == {("GET", 200): 1}


def test_error_mid_body(loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 206, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        raise ValueError

    client = connect(loop, app)
    client.send(GET)
    client.wait_closed()
    assert settled(client) == {("GET", 206): 1}


@pytest.mark.parametrize("ending", ["return", "oserror", "valueerror"])
def test_client_gone_while_the_app_works(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture, ending: str
) -> None:
    finished = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            assert (await receive())["type"] == "http.request"
            assert (await receive())["type"] == "http.disconnect"
            if ending == "oserror":
                raise ConnectionResetError
            if ending == "valueerror":
                raise ValueError
            await send({"type": "http.response.body", "body": b""})
        finally:
            finished.set()

    client = connect(loop, app)
    client.send(GET)
    client.run_until(lambda: client.output.endswith(b"1\r\nx\r\n"))
    client.close()
    client.run_until(finished.is_set)
    assert settled(client) == {("GET", 200): 1}
    # Only a surprising exception is worth a traceback after the client left.
    assert ("Exception in ASGI application" in logs.text) == (ending == "valueerror")


def test_client_gone_before_the_response_started(loop: asyncio.AbstractEventLoop) -> None:
    finished = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        assert (await receive())["type"] == "http.disconnect"
        await ok(scope, receive, send)  # a no-op now
        finished.set()

    client = connect(loop, app)
    client.send(GET)
    client.spin()
    client.close()
    client.run_until(finished.is_set)
    assert client.output == b""
    assert settled(client) == {("GET", 499): 1}


def test_broken_body_while_the_app_reads(loop: asyncio.AbstractEventLoop) -> None:
    finished = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        finished.set()

    client = connect(loop, app)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
    client.spin()
    client.send(b"xyz\r\n")
    client.wait_closed()
    client.run_until(finished.is_set)
    assert settled(client) == {("POST", 499): 1}
    assert client.stats.bad_requests() == {400: 1}


def test_pipelined_requests_after_a_failure_are_not_counted(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        raise ValueError

    client = connect(loop, app)
    client.send(GET * 3)
    client.wait_closed()
    assert settled(client) == {("GET", 500): 1}


def test_keep_alive_gauges(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, ok)
    assert client.stats.get(slots.KEEPALIVE_IDLE) == 1  # a fresh connection waits idle
    client.send(GET)
    client.read_response()
    assert client.stats.get(slots.KEEPALIVE_IDLE) == 1
    assert client.stats.get(slots.CONNECTIONS_OPEN) == 1
    client.close()
    assert settled(client) == {("GET", 200): 1}
