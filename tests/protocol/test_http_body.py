"""Request bodies: receive(), flow control, chunked bodies, 100-continue, disconnects."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shardcorn.protocol.cycle import BODY_HIGH_WATER
from tests.protocol.memory import Client, connect

Message = dict[str, Any]


class Recorder:
    """An app that records what receive() returns, driven step by step by the test."""

    def __init__(self, read_body: bool = True, respond: bool = True) -> None:
        self.messages: list[Message] = []
        self.read_body = read_body
        self.respond = respond
        self.done = False

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        mine: list[Message] = []
        if self.read_body:
            while True:
                message = await receive()
                mine.append(message)
                self.messages.append(message)
                if message["type"] != "http.request" or not message["more_body"]:
                    break
        if self.respond:
            body = b"".join(m.get("body", b"") for m in mine)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
        self.done = True

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages)


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_content_length_body(loop: asyncio.AbstractEventLoop, byte_by_byte: bool) -> None:
    app = Recorder()
    client = connect(loop, app)
    request = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"
    client.send(request, byte_by_byte)
    response = client.read_response()
    client.close()
    assert response.body == b"hello world"
    last = app.messages[-1]
    assert last == {"type": "http.request", "body": last["body"], "more_body": False}
    assert all(m["type"] == "http.request" for m in app.messages)
    if not byte_by_byte:
        assert app.messages == [
            {"type": "http.request", "body": b"hello world", "more_body": False}
        ]


def test_no_body_gives_one_empty_message(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    client = connect(loop, app)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.read_response()
    client.close()
    assert app.messages == [{"type": "http.request", "body": b"", "more_body": False}]


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_chunked_body(loop: asyncio.AbstractEventLoop, byte_by_byte: bool) -> None:
    app = Recorder()
    client = connect(loop, app)
    client.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
        byte_by_byte,
    )
    response = client.read_response()
    assert response.body == b"hello 0123456789"
    # The connection is still usable: the chunked framing was consumed exactly.
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok")
    assert client.read_response().body == b"ok"
    client.close()


def test_body_arrives_as_it_is_received(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder(respond=False)
    client = connect(loop, app)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabc")
    client.run_until(lambda: len(app.messages) == 1)
    assert app.messages == [{"type": "http.request", "body": b"abc", "more_body": True}]
    client.send(b"def")
    client.run_until(lambda: app.done)
    assert app.messages[1] == {"type": "http.request", "body": b"def", "more_body": False}
    client.close()
    client.spin()


def test_flow_control_pauses_above_high_water_and_resumes(
    loop: asyncio.AbstractEventLoop,
) -> None:
    gate = asyncio.Event()
    received: list[int] = []

    async def slow_reader(scope: Message, receive: Any, send: Any) -> None:
        await gate.wait()  # not consuming yet
        while True:
            message = await receive()
            received.append(len(message["body"]))
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % sum(received)})

    total = BODY_HIGH_WATER * 4
    client = connect(loop, slow_reader)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)
    chunk = b"x" * 16384
    for _ in range(total // len(chunk)):
        client.send(chunk)
    client.spin()
    # The app is not reading: the protocol stopped reading once above the high-water mark,
    # and the rest waits in the "socket".
    assert not client.transport.reading
    buffered = total - len(client.transport.inbound)
    assert BODY_HIGH_WATER < buffered <= BODY_HIGH_WATER + len(chunk)
    gate.set()
    response = client.read_response()
    assert response.body == b"%d" % total
    assert client.transport.reading
    assert client.transport.pause_count >= 1
    client.close()


def test_flow_control_resumes_when_a_response_ends_before_the_body(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # The app answers without reading a large body: reading must resume (the rest of the
    # body is read and dropped) and the connection must stay usable.
    app = Recorder(read_body=False)
    client = connect(loop, app)
    total = BODY_HIGH_WATER * 3
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)
    client.send(b"y" * total)
    assert client.read_response().status == 200
    client.run_until(lambda: not client.transport.inbound)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.read_response().status == 200
    client.close()


def test_expect_100_continue_answered_on_first_receive(loop: asyncio.AbstractEventLoop) -> None:
    gate = asyncio.Event()
    app = Recorder()

    async def wrapped(scope: Message, receive: Any, send: Any) -> None:
        await gate.wait()
        await app(scope, receive, send)

    client = connect(loop, wrapped)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    client.spin()
    assert client.output == b""  # not before the app asks for the body
    gate.set()
    client.run_until(lambda: client.output == b"HTTP/1.1 100 Continue\r\n\r\n")
    client.send(b"body")
    client.consumed = len(b"HTTP/1.1 100 Continue\r\n\r\n")
    response = client.read_response()
    assert response.body == b"body"
    assert client.output.count(b"100 Continue") == 1
    assert not client.closed
    client.close()


def test_expect_100_continue_not_sent_when_the_app_answers_first(
    loop: asyncio.AbstractEventLoop,
) -> None:
    app = Recorder(read_body=False)
    client = connect(loop, app)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    response = client.read_response()
    assert b"100 Continue" not in client.output
    # The client may or may not send the body now, so the connection cannot be reused.
    assert response.header(b"connection") == b"close"
    client.wait_closed()


def test_disconnect_while_waiting_for_body(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder(respond=False)
    client = connect(loop, app)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    client.run_until(lambda: len(app.messages) == 1)
    client.close()
    client.run_until(lambda: app.done)
    assert app.messages[-1] == {"type": "http.disconnect"}


def test_disconnect_while_streaming_a_response(loop: asyncio.AbstractEventLoop) -> None:
    results: list[Any] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        results.append(await receive())  # blocks until the client goes away
        # Sending to a closed connection is a no-op, not an error.
        await send({"type": "http.response.body", "body": b"more", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        results.append("finished")

    client = connect(loop, app)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.run_until(lambda: client.output.endswith(b"4\r\npart\r\n"))
    client.spin()
    assert results == []
    client.close()
    client.run_until(lambda: len(results) == 2)
    assert results == [{"type": "http.disconnect"}, "finished"]
    assert client.ctx.requests_in_flight == 0


def test_receive_after_the_body_waits_without_spinning(loop: asyncio.AbstractEventLoop) -> None:
    """Once the body is read, receive() blocks until something happens: counting calls."""
    calls = 0
    finished = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        nonlocal calls

        async def counted() -> Message:
            nonlocal calls
            calls += 1
            message: Message = await receive()
            return message

        first = await counted()
        assert first == {"type": "http.request", "body": b"", "more_body": False}
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        while (await counted())["type"] != "http.disconnect":
            pass
        finished.set()

    client = connect(loop, app)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.run_until(lambda: client.output.endswith(b"1\r\nx\r\n"))
    client.spin(200)  # many loop iterations: a spinning receive() would count them
    assert calls == 2
    client.close()
    client.run_until(finished.is_set)
    assert calls == 2


def test_receive_after_the_response_says_disconnect(loop: asyncio.AbstractEventLoop) -> None:
    """ASGI: receive() after the response is complete returns http.disconnect at once."""
    after: list[Message] = []
    waiter_result: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        waiting = asyncio.ensure_future(receive())  # a receive() blocked across the end
        await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        waiter_result.append(await waiting)
        after.append(await receive())
        after.append(await receive())

    client = connect(loop, app)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.read_response()
    client.run_until(lambda: len(after) == 2)
    assert waiter_result == [{"type": "http.disconnect"}]
    assert after == [{"type": "http.disconnect"}] * 2
    assert not client.closed  # the connection itself stays open for the next request
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.read_response()
    client.close()


def test_pipelined_request_waits_with_its_body(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    client: Client = connect(loop, app)
    client.send(
        b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\none"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"
    )
    assert client.read_response().body == b"one"
    assert client.read_response().body == b"two"
    client.close()


def test_large_body_on_both_loops(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    client = connect(loop, app)
    body = bytes(range(256)) * 2048
    client.send(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
    for i in range(0, len(body), 65536):
        client.send(body[i : i + 65536])
    assert client.read_response().body == body
    client.close()


def test_pipelined_request_with_a_large_body_waits_paused(
    loop: asyncio.AbstractEventLoop,
) -> None:
    gate = asyncio.Event()
    app = Recorder()

    async def first_waits(scope: Message, receive: Any, send: Any) -> None:
        if scope["path"] == "/1":
            await gate.wait()
        await app(scope, receive, send)

    client = connect(loop, first_waits)
    size = BODY_HIGH_WATER * 3
    client.send(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size
    )
    for _ in range(size // 16384):
        client.send(b"z" * 16384)
    client.spin()
    assert not client.transport.reading  # the second body is buffered up to the mark only
    assert len(client.transport.inbound) >= size - BODY_HIGH_WATER - 16384
    gate.set()
    assert client.read_response().body == b""
    assert client.read_response().body == b"z" * size
    client.close()


def test_expect_100_continue_with_the_body_already_sent(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    client = connect(loop, app)
    client.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi"
    )
    client.run_until(lambda: client.output.count(b"HTTP/1.1") == 2)
    interim = client.output.partition(b"\r\n\r\n")[0]
    assert interim == b"HTTP/1.1 100 Continue"
    client.consumed = len(interim) + 4
    assert client.read_response().body == b"hi"
    client.close()


def test_concurrent_receive_calls_are_all_woken(loop: asyncio.AbstractEventLoop) -> None:
    results: dict[str, list[str]] = {"reader": [], "listener": []}

    async def app(scope: Message, receive: Any, send: Any) -> None:
        async def collect(name: str) -> None:
            while True:
                message = await receive()
                results[name].append(message["type"])
                if message["type"] == "http.disconnect":
                    return

        listener = asyncio.ensure_future(collect("listener"))
        cancelled = asyncio.ensure_future(receive())  # a third waiter, given up on
        await asyncio.sleep(0)
        cancelled.cancel()
        await collect("reader")
        await listener

    client = connect(loop, app)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
    client.spin()
    client.send(b"cd")
    client.spin()
    client.close()
    client.run_until(lambda: "http.disconnect" in results["reader"] + results["listener"])
    client.run_until(lambda: all(r and r[-1] == "http.disconnect" for r in results.values()))
    both = results["reader"] + results["listener"]
    assert both.count("http.request") == 2  # each body message went to exactly one of them


def test_no_100_continue_for_http10(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    client = connect(loop, app)
    client.send(b"POST / HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi")
    assert client.read_response().body == b"hi"
    assert b"100 Continue" not in client.output
    client.wait_closed()
