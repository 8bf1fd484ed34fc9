"""Bytes in, bytes out: feeding hostile input to the HTTP protocol over the in-memory transport.

:class:`BodyReader` is the app for every refusal test: it reads each request's whole body
before it answers, so a request whose framing breaks after its head never gets an answer from
it, and it records what it saw. :func:`pieces` yields every way the hardening suite delivers a
request: whole, split in two at every byte, and one byte at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from shardcorn.protocol.context import ShardContext
from tests.protocol.memory import Client, IncompleteResponseError, Response, connect, parse_response

Message = dict[str, Any]

# A valid request sent after every hostile one: it must never reach the app.
FOLLOW = b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n"


class BodyReader:
    """Reads the whole body, then answers 200 with the path (or with nothing, so that a HEAD
    answer parses like any other); records every call."""

    def __init__(self, echo_path: bool = True) -> None:
        self.echo_path = echo_path
        self.calls: list[str] = []  # paths the app was called for
        self.completed: list[str] = []  # ... and got the whole body of
        self.bodies: list[bytes] = []
        self.disconnects = 0

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        path = scope["path"]
        self.calls.append(path)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            body += message["body"]
            if not message["more_body"]:
                break
        self.completed.append(path)
        self.bodies.append(bytes(body))
        answer = path.encode() if self.echo_path else b""
        headers = [(b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["method"] == "HEAD":
            answer = b""
        await send({"type": "http.response.body", "body": answer})


def pieces(data: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """(label, pieces): whole, every two-piece split, then byte by byte."""
    yield "whole", [data]
    for i in range(1, len(data)):
        yield f"split at {i}", [data[:i], data[i:]]
    yield "byte by byte", [data[i : i + 1] for i in range(len(data))]


def deliver(loop: asyncio.AbstractEventLoop, ctx: ShardContext, parts: list[bytes]) -> Client:
    """Open a connection and send ``parts`` as separate reads, each read before the next."""
    client = connect(loop, ctx=ctx)
    transport = client.transport

    async def send_all() -> None:
        for part in parts:
            if transport.closing:
                break  # refused: what the client still sends is never read
            transport.receive_from_client(part)
            await asyncio.sleep(0)  # the read callback runs before this resumes

    loop.run_until_complete(send_all())
    return client


def only_response(client: Client) -> Response:
    """Wait for the connection to close; exactly one complete response must have come out."""
    client.wait_closed()
    output = client.output
    try:
        response, rest = parse_response(output, eof=True)
    except IncompleteResponseError:
        raise AssertionError(f"no complete response: {output!r}") from None
    assert rest == b"", f"bytes after the response: {rest!r}"
    return response


def assert_refused(client: Client, app: BodyReader, status: int, label: str = "") -> None:
    """The connection got ``status`` with Connection: close, then closed; the app never
    completed a request and never saw the one sent after the hostile one."""
    response = only_response(client)
    assert response.status == status, (label, response.status, response.body)
    assert response.header(b"connection") == b"close", label
    assert response.header(b"content-length") == str(len(response.body)).encode(), label
    assert app.completed == [], (label, app.completed)
    assert "/after" not in app.calls, label
