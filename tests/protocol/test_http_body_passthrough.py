"""Large Content-Length bodies skip httptools after their first read (http._BodyPassThrough).

What must hold: the app gets every byte in order, the request after the body (pipelined in
the same read or not) is parsed by a fresh parser, and an upgrade pipelined right after such a
body hands the WebSocket protocol exactly the bytes that follow its head.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time

import pytest

from shardcorn.loading import Receive, Scope, Send
from shardcorn.protocol.http import PASS_BODY_MIN
from shardcorn.testing import serve_in_thread
from tests.protocol.memory import connect
from tests.raw import read_until

BODY = bytes(range(256)) * ((3 * PASS_BODY_MIN) // 256 + 7)  # not a multiple of any split


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        if message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})
            await send({"type": "websocket.close", "code": 1000})
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"x-path", scope["path"].encode())],
        }
    )
    await send({"type": "http.response.body", "body": b"%d:%d" % (len(body), hash(body))})


def _post(path: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)


@pytest.mark.parametrize("split", [1000, 65536, 100_000, 250_000, 10**7])
def test_bodies_and_what_follows_arrive_whole(loop: asyncio.AbstractEventLoop, split: int) -> None:
    client = connect(loop, echo)
    stream = (
        _post(b"/a", BODY)
        + b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
        + _post(b"/c", BODY[: PASS_BODY_MIN + 3])
        + _post(b"/d", b"small")
    )
    for start in range(0, len(stream), split):
        client.send(stream[start : start + split])
    responses = [client.read_response() for _ in range(4)]
    assert [(r.status, r.header(b"x-path")) for r in responses] == [
        (200, b"/a"),
        (200, b"/b"),
        (200, b"/c"),
        (200, b"/d"),
    ]
    expected = [BODY, b"", BODY[: PASS_BODY_MIN + 3], b"small"]
    assert [r.body for r in responses] == [b"%d:%d" % (len(b), hash(b)) for b in expected]
    client.close()


def test_the_rest_of_a_large_body_skips_the_parser(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, echo)
    request = _post(b"/a", BODY)
    client.send(request[:1000])  # the head and the start of the body
    assert type(client.protocol.parser).__name__ == "_BodyPassThrough"
    client.send(request[1000:])
    assert client.read_response().status == 200
    assert type(client.protocol.parser).__name__ == "HttpRequestParser"  # a fresh one
    client.close()


def test_a_small_rest_goes_through_the_parser(loop: asyncio.AbstractEventLoop) -> None:
    client = connect(loop, echo)
    request = _post(b"/a", BODY[: PASS_BODY_MIN + 100])
    client.send(request[: len(request) - PASS_BODY_MIN + 1])  # less than the minimum left
    assert type(client.protocol.parser).__name__ == "HttpRequestParser"
    client.send(request[len(request) - PASS_BODY_MIN + 1 :])
    assert client.read_response().status == 200
    client.close()


def test_an_upgrade_right_after_a_passed_body_gets_its_own_bytes() -> None:
    key = base64.b64encode(b"0123456789abcdef")
    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    mask = b"\x01\x02\x03\x04"
    frame = b"\x81\x82" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hi"))
    request = _post(b"/big", BODY)
    with (
        serve_in_thread(echo, lifespan="off") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        sock.sendall(request[:1000])
        time.sleep(0.05)  # read on its own: the rest of the body is then passed through
        sock.sendall(request[1000:] + upgrade + frame)  # the frame rides with the head
        data = read_until(sock, b"HTTP/1.1 101")
        first, _, rest = data.partition(b"HTTP/1.1 101")
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        assert first.endswith(b"%d:%d" % (len(BODY), hash(BODY)))
        tail = read_until(sock, b"\x81\x02hi", rest)
        assert b"\x81\x02hi" in tail
