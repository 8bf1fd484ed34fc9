"""The bundled demo app: ``shardcorn shardcorn.demo:app``.

Routes: ``/`` hello, ``/echo`` (POST body back), ``/stream`` (a chunked response),
``/json``, ``/sleep?ms=N``, and ``/ws`` (WebSocket echo).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import parse_qs

from shardcorn.loading import Receive, Scope, Send

TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _websocket_echo(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    if kind == "websocket":
        await _websocket_echo(scope, receive, send)
        return
    path = scope["path"]
    if path == "/":
        await _respond(send, 200, b"Hello, world!", TEXT)
    elif path == "/echo":
        body = await _read_body(receive)
        await _respond(send, 200, body, [(b"content-type", b"application/octet-stream")])
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": TEXT})
        for i in range(10):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/json":
        payload: dict[str, Any] = {
            "message": "Hello, world!",
            "method": scope["method"],
            "path": path,
            "pid": os.getpid(),
        }
        await _respond(
            send, 200, json.dumps(payload).encode(), [(b"content-type", b"application/json")]
        )
    elif path == "/sleep":
        query = parse_qs(scope["query_string"].decode("latin-1"))
        try:
            ms = max(0.0, min(float(query.get("ms", ["100"])[0]), 60_000.0))
        except ValueError:
            await _respond(send, 400, b"ms must be a number", TEXT)
            return
        await asyncio.sleep(ms / 1000)
        await _respond(send, 200, b"slept %d ms" % ms, TEXT)
    else:
        await _respond(send, 404, b"Not Found", TEXT)
