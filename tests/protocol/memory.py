"""An in-memory transport for bytes-in/bytes-out tests of the HTTP protocol on a real loop.

:class:`MemoryTransport` behaves like a stream transport as far as a protocol can tell: it
records what the protocol writes, honours ``pause_reading``/``resume_reading`` the way a
kernel socket buffer does (bytes the client "sends" while reading is paused wait in the
transport until reading resumes), reports ``connection_lost`` on the next loop iteration
after ``close()``/``abort()``, and can push back on writes (``pause_writing``).

:class:`Client` drives one connection: it sends bytes (whole or one byte at a time), waits
on the loop for a condition with a deadline (never a fixed sleep), and parses what the
server wrote into :class:`Response` objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shardcorn.config import Config
from shardcorn.loading import load_app
from shardcorn.metrics.stats import SLOT_BYTES, ShardStats, StatsReader
from shardcorn.protocol.context import ShardContext
from shardcorn.protocol.http import HttpProtocol

CLIENT = ("127.0.0.1", 50000)
SERVER = ("127.0.0.1", 8000)


class MemoryTransport(asyncio.Transport):
    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.loop = loop
        self.protocol = protocol
        self.output = bytearray()
        self.closing = False
        self.aborted = False
        self.lost = False
        self.reading = True
        self.inbound = bytearray()  # sent by the client, not yet read by the protocol
        self.pause_count = 0
        self.changed = asyncio.Event()
        self.extra: dict[str, Any] = {"peername": CLIENT, "sockname": SERVER}

    # -- what the protocol calls -------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.lost:
            raise AssertionError("write() after connection_lost()")
        self.output += data
        self.changed.set()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.reading = False
            self.loop.call_soon(self._lose, None)
        self.changed.set()

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        if self.reading:
            self.pause_count += 1
        self.reading = False

    def resume_reading(self) -> None:
        if self.closing or self.reading:
            return
        self.reading = True
        if self.inbound:
            self.loop.call_soon(self._deliver)

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    # -- what the client side does -----------------------------------------------------------
    def receive_from_client(self, data: bytes) -> None:
        """Bytes arrive from the client: read on the next loop iteration, as from a socket
        (from a plain loop callback, never from inside a task), unless reading is paused."""
        self.inbound += data
        if self.reading:
            self.loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        if self.inbound and self.reading and not self.closing:
            data = bytes(self.inbound)
            self.inbound.clear()
            self.protocol.data_received(data)
        self.changed.set()

    def client_closed(self) -> None:
        """The peer went away (a reset, or a FIN the protocol does not keep open for)."""
        if not self.closing:
            self.closing = True
            self.reading = False
            self.loop.call_soon(self._lose, None)

    def _lose(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(exc)
            self.changed.set()


@dataclass
class Response:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunked: bool = False
    raw_head: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n.lower() == name]
        return values[0] if values else None

    def header_names(self) -> list[bytes]:
        return [n.lower() for n, _ in self.headers]


class IncompleteResponseError(Exception):
    """The bytes so far do not hold a whole response."""


def parse_response(
    data: bytes, head_request: bool = False, eof: bool = False
) -> tuple[Response, bytes]:
    """Parse one response off the front of ``data``; return it and what follows it.

    Raises :class:`IncompleteResponseError` when ``data`` does not hold a whole response yet.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise IncompleteResponseError
    head, rest = data[:end], data[end + 4 :]
    lines = head.split(b"\r\n")
    version, _, status_reason = lines[0].partition(b" ")
    assert version == b"HTTP/1.1", lines[0]
    status_text, _, reason = status_reason.partition(b" ")
    status = int(status_text)
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        assert sep, f"malformed header line {line!r}"
        assert name == name.strip() and name, f"malformed header name {line!r}"
        headers.append((name, value.strip()))
    response = Response(status, reason, headers, b"", raw_head=head + b"\r\n\r\n")
    lengths = [v for n, v in headers if n.lower() == b"content-length"]
    codings = [v for n, v in headers if n.lower() == b"transfer-encoding"]
    if head_request or status < 200 or status in (204, 304):
        return response, rest
    if codings:
        assert not lengths, "both content-length and transfer-encoding"
        assert codings == [b"chunked"], codings
        response.chunked = True
        body = bytearray()
        while True:
            line_end = rest.find(b"\r\n")
            if line_end < 0:
                raise IncompleteResponseError
            size = int(rest[:line_end], 16)
            chunk_start = line_end + 2
            if len(rest) < chunk_start + size + 2:
                raise IncompleteResponseError
            assert rest[chunk_start + size : chunk_start + size + 2] == b"\r\n"
            body += rest[chunk_start : chunk_start + size]
            rest = rest[chunk_start + size + 2 :]
            if size == 0:
                response.body = bytes(body)
                return response, rest
    if lengths:
        assert len(set(lengths)) == 1, lengths
        length = int(lengths[0])
        if len(rest) < length:
            raise IncompleteResponseError
        response.body = rest[:length]
        return response, rest[length:]
    if not eof:
        raise IncompleteResponseError
    response.body = rest
    return response, b""


def parse_responses(data: bytes, heads: int | None = None, eof: bool = False) -> list[Response]:
    """Every complete response in ``data`` (``heads``: the index of a HEAD request's answer)."""
    responses = []
    rest = data
    while rest:
        try:
            response, rest = parse_response(rest, head_request=len(responses) == heads, eof=eof)
        except IncompleteResponseError:
            break
        responses.append(response)
    return responses


@dataclass
class Client:
    """One connection to an :class:`HttpProtocol` over a :class:`MemoryTransport`."""

    loop: asyncio.AbstractEventLoop
    ctx: ShardContext
    protocol: HttpProtocol
    transport: MemoryTransport
    stats: StatsReader
    consumed: int = 0
    responses: list[Response] = field(default_factory=list)

    @property
    def output(self) -> bytes:
        return bytes(self.transport.output)

    @property
    def closed(self) -> bool:
        return self.transport.closing

    def send(self, data: bytes, byte_by_byte: bool = False) -> None:
        """Send bytes (whole, or one at a time), and let the loop read what it will."""
        pieces = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
        transport = self.transport

        async def deliver() -> None:
            for piece in pieces:
                if transport.closing:
                    break
                transport.receive_from_client(piece)
                await asyncio.sleep(0)  # the read callback runs before this resumes

        self.loop.run_until_complete(deliver())

    def close(self) -> None:
        """The client goes away; the protocol hears of it on the next loop iteration."""
        self.transport.client_closed()
        self.run_until(lambda: self.transport.lost)

    def run_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Run the loop until ``condition()`` holds; fail after ``timeout`` seconds."""

        async def wait() -> None:
            while not condition():
                self.transport.changed.clear()
                waiter = asyncio.ensure_future(self.transport.changed.wait())
                try:
                    # Wake on any write/close, and at least every loop tick for other state.
                    await asyncio.wait({waiter}, timeout=0.005)
                finally:
                    waiter.cancel()

        self.loop.run_until_complete(asyncio.wait_for(wait(), timeout))

    def spin(self, iterations: int = 20) -> None:
        """Let the loop run a few iterations (for asserting that something did *not* happen)."""

        async def spin() -> None:
            for _ in range(iterations):
                await asyncio.sleep(0)

        self.loop.run_until_complete(spin())

    def read_response(self, head: bool = False, timeout: float = 5.0) -> Response:
        """Wait for the next complete response."""
        found: list[Response] = []

        def complete() -> bool:
            data = self.output[self.consumed :]
            try:
                response, rest = parse_response(data, head_request=head, eof=self.closed)
            except IncompleteResponseError:
                return False
            found.append(response)
            self.consumed = len(self.output) - len(rest)
            return True

        self.run_until(complete, timeout)
        self.responses.append(found[0])
        return found[0]

    def wait_closed(self, timeout: float = 5.0) -> None:
        self.run_until(lambda: self.transport.lost, timeout)

    def unread(self) -> bytes:
        return self.output[self.consumed :]


def make_config(app: Any, **settings: Any) -> Config:
    settings.setdefault("lifespan", "off")
    settings.setdefault("log_level", "warning")
    return Config(app=app, **settings)


def connect(
    loop: asyncio.AbstractEventLoop,
    app: Any = None,
    ctx: ShardContext | None = None,
    **settings: Any,
) -> Client:
    """Open one in-memory connection to a protocol serving ``app`` (or an existing ``ctx``)."""
    if ctx is None:
        ctx = make_context(loop, app, **settings)
    protocol = HttpProtocol(ctx)
    transport = MemoryTransport(loop, protocol)
    protocol.connection_made(transport)
    return Client(loop, ctx, protocol, transport, ctx.stats_reader)  # type: ignore[attr-defined]


def make_context(loop: asyncio.AbstractEventLoop, app: Any, **settings: Any) -> ShardContext:
    """A shard context for in-memory connections; ``ctx.stats_reader`` reads its counters."""
    config = make_config(app, **settings)
    buffer = bytearray(SLOT_BYTES)
    ctx = ShardContext(config, load_app(config), loop, ShardStats(buffer))
    ctx.stats_reader = StatsReader(buffer)  # type: ignore[attr-defined]
    return ctx
