"""A minimal raw-ASGI WebSocket echo application for the Autobahn testsuite.

Serve it with any ASGI server, e.g.::

    python -m shardcorn scripts.autobahn.echo:app --host 127.0.0.1 --port 9001

Every WebSocket connection is accepted (no subprotocol, no extra headers) and every
message is sent back unchanged, text as text and binary as binary, until the client
disconnects. Plain HTTP requests get a short ``200`` text answer, and the lifespan
protocol is acknowledged so servers that run it start cleanly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HTTP_BODY = b"Autobahn echo endpoint: open a WebSocket to any path.\n"


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(receive: Receive, send: Send) -> None:
    # Drain the request body so the server sees it consumed, then answer.
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if message["type"] == "http.request" and not message.get("more_body", False):
            break
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(HTTP_BODY)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": HTTP_BODY})


async def _websocket(receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
        elif kind == "websocket.disconnect":
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI 3 entry point: WebSocket echo, a tiny HTTP answer, and lifespan."""
    kind = scope["type"]
    if kind == "websocket":
        await _websocket(receive, send)
    elif kind == "http":
        await _http(receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)
