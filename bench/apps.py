"""The ASGI applications every server is benchmarked on.

Each workload names one of these as ``bench.apps:<name>``. The raw apps answer the lifespan
protocol themselves so that no server logs "lifespan unsupported" or takes a slower path for
them; they touch nothing per request beyond what the workload needs, so the numbers measure the
server, not the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HELLO_BODY = b"Hello, world!"
BODY_64K = b"x" * (64 * 1024)

_HELLO_HEADERS = [
    (b"content-type", b"text/plain"),
    (b"content-length", str(len(HELLO_BODY)).encode("ascii")),
]
_BODY_64K_HEADERS = [
    (b"content-type", b"application/octet-stream"),
    (b"content-length", str(len(BODY_64K)).encode("ascii")),
]


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown; these apps hold no state."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """Raw ASGI: a 13-byte text/plain body, the smallest useful response."""
    if scope["type"] != "http":
        await _lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HELLO_HEADERS})
    await send({"type": "http.response.body", "body": HELLO_BODY})


async def body64k(scope: Scope, receive: Receive, send: Send) -> None:
    """Raw ASGI: a 64 KiB body, which exercises the write path and transport buffering."""
    if scope["type"] != "http":
        await _lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": _BODY_64K_HEADERS})
    await send({"type": "http.response.body", "body": BODY_64K})


async def echo1m(scope: Scope, receive: Receive, send: Send) -> None:
    """Raw ASGI: read the whole request body (1 MiB in the workload) and send it back.

    This exercises request-body flow control as much as the response path: the server has to
    feed ``receive()`` with many chunks before the app can answer.
    """
    if scope["type"] != "http":
        await _lifespan(receive, send)
        return
    chunks: list[bytes] = []
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more_body = message.get("more_body", False)
    body = b"".join(chunks)
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _starlette_hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(HELLO_BODY.decode("ascii"))


starlette = Starlette(routes=[Route("/", _starlette_hello)])
"""The ``hello`` response through a framework: routing, Request, PlainTextResponse."""
