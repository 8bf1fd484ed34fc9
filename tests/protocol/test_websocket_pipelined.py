"""An upgrade pipelined behind an unfinished request waits for that request's response."""

from __future__ import annotations

import asyncio
import base64
import socket

from shardcorn.loading import Receive, Scope, Send
from shardcorn.testing import serve_in_thread
from tests.raw import read_until


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await asyncio.sleep(0.05)  # answered after the upgrade request has arrived
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
        )
        await send({"type": "http.response.body", "body": b"first"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        if message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})
            await send({"type": "websocket.close", "code": 1000})


def test_upgrade_behind_a_pending_request_is_answered_in_order() -> None:
    key = base64.b64encode(b"0123456789abcdef")
    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with (
        serve_in_thread(app, lifespan="off") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + upgrade)
        data = read_until(sock, b"\r\n\r\n", b"")
        data = read_until(sock, b"HTTP/1.1 101", data)
        first, _, rest = data.partition(b"HTTP/1.1 101")
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        assert first.endswith(b"\r\n\r\nfirst")
        rest = read_until(sock, b"\r\n\r\n", rest)
        # A masked text frame "hi"; the echo comes back unmasked.
        mask = b"\x01\x02\x03\x04"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"hi"))
        sock.sendall(b"\x81\x82" + mask + payload)
        tail = rest.partition(b"\r\n\r\n")[2]
        tail = read_until(sock, b"\x81\x02hi", tail)
        assert b"\x81\x02hi" in tail
