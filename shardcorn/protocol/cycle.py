"""One HTTP request/response cycle: the ``receive`` and ``send`` an ASGI app is given.

A cycle buffers its request body (the connection pauses reading above a high-water mark),
frames its response through :class:`ResponseWriter`, and reports back to its connection
when the response is complete. The app is started *eagerly*: its first step runs at once in
a copied context, and an ``asyncio.Task`` is made only if it has to wait for something, so a
handler that answers without waiting costs no task at all.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import types
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

from shardcorn.logs import access_log, error_log, escape
from shardcorn.protocol.response import AppProtocolError, ResponseWriter

if TYPE_CHECKING:
    from shardcorn.protocol.http import HttpProtocol

# Pause reading from the socket when this much request body waits for the app.
BODY_HIGH_WATER = 64 * 1024

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT = {"type": "http.disconnect"}


class RequestCycle:
    __slots__ = (
        "accounted",
        "body",
        "complete",
        "disconnected",
        "expect_100",
        "keep_alive",
        "last_body_sent",
        "launched",
        "method",
        "more_body",
        "proto",
        "scope",
        "started",
        "start_time",
        "task",
        "waiter",
        "writer",
    )

    def __init__(
        self,
        proto: HttpProtocol,
        scope: dict[str, Any],
        keep_alive: bool,
        expect_100: bool,
    ) -> None:
        self.proto = proto
        self.scope = scope
        self.method: str = scope["method"]
        self.keep_alive = keep_alive
        self.expect_100 = expect_100
        self.body = bytearray()
        self.more_body = True  # the parser has not seen the end of the request body yet
        self.last_body_sent = False  # the app has been given more_body=False
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.started = False
        self.complete = False
        self.writer = ResponseWriter()
        self.task: asyncio.Task[None] | None = None
        self.launched = False  # handed to the app
        self.accounted = False  # counted as finished in the stats
        self.start_time = time.perf_counter()

    # -- events from the connection --------------------------------------------------------
    def feed_body(self, data: bytes) -> None:
        if self.complete or self.disconnected:
            return  # the app has answered; the rest of the body is read and dropped
        self.body += data
        self._wake()
        if len(self.body) > BODY_HIGH_WATER:
            self.proto.pause_reading()

    def end_body(self) -> None:
        self.more_body = False
        self._wake()

    def disconnect(self) -> None:
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the ASGI callables ----------------------------------------------------------------
    async def receive(self) -> dict[str, Any]:
        if self.expect_100:
            self.expect_100 = False
            if not self.started and not self.disconnected:
                self.proto.write(_CONTINUE)
        while True:
            if self.disconnected:
                return _DISCONNECT.copy()
            if self.body or (not self.more_body and not self.last_body_sent):
                body = bytes(self.body)
                self.body.clear()
                if not self.more_body:
                    self.last_body_sent = True
                self.proto.body_consumed()
                return {"type": "http.request", "body": body, "more_body": self.more_body}
            # Nothing to hand over: more body is on its way, or the request is fully read
            # and only a disconnect can come next. Either way, wait; never spin.
            self.proto.body_consumed()
            waiter = self.waiter = self.proto.loop.create_future()
            await waiter

    async def send(self, message: dict[str, Any]) -> None:
        mtype = message["type"]
        if self.started:
            if mtype != "http.response.body":
                raise RuntimeError(f"unexpected ASGI message {mtype!r} after the response start")
            if self.complete:
                raise RuntimeError("http.response.body sent after the response was complete")
            if self.disconnected:
                if not message.get("more_body", False):
                    self.complete = True
                return  # ASGI: sending to a closed connection is a no-op
            data = self.writer.body(message.get("body", b""), message.get("more_body", False))
            proto = self.proto
            if data:
                proto.write(data)
            if self.writer.finished:
                self.complete = True
                proto.response_complete(self)
            elif proto.write_paused:
                await proto.drain()
            return
        if mtype != "http.response.start":
            raise RuntimeError(f"expected 'http.response.start', got {mtype!r}")
        if self.disconnected:
            self.started = True
            return
        proto = self.proto
        keep_alive = self.keep_alive and not proto.ctx.shutting_down
        try:
            self.writer.start(
                message["status"],
                message.get("headers", ()),
                proto.ctx.default_headers,
                head_request=self.method == "HEAD",
                keep_alive=keep_alive,
                http11=self.scope["http_version"] == "1.1",
            )
        except AppProtocolError as exc:
            raise RuntimeError(str(exc)) from None
        self.started = True
        if proto.ctx.access_log_enabled:
            self.log_access(self.writer.status)

    def log_access(self, status: int) -> None:
        scope = self.scope
        client = scope.get("client")
        address = f"{client[0]}:{client[1]}" if client else "-"
        path = scope["path"]  # already includes root_path
        query = scope["query_string"]
        target = f"{path}?{query.decode('latin-1')}" if query else path
        access_log.info(
            '%s - "%s %s HTTP/%s" %d',
            address,
            escape(self.method),
            escape(target),
            scope["http_version"],
            status,
        )

    # -- running the app -------------------------------------------------------------------
    async def run(self) -> None:
        proto = self.proto
        try:
            result = await proto.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and proto.ctx.shutting_down:
                proto.app_cancelled(self)
                return
            if self.disconnected and isinstance(exc, (OSError, asyncio.CancelledError)):
                proto.client_gone(self)
                return
            error_log.error("Exception in ASGI application", exc_info=exc)
            proto.app_failed(self)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return
        if self.disconnected:
            proto.client_gone(self)
            return
        if result is not None:
            error_log.error("ASGI callable returned a value (%r); expected None", result)
        if not self.started:
            error_log.error("ASGI callable returned without starting a response")
            proto.app_failed(self)
        elif not self.complete:
            error_log.error("ASGI callable returned without completing the response")
            proto.app_failed(self)

    def start(self) -> None:
        """Run the app's first step now; make a task only if it has to wait."""
        context = contextvars.copy_context()
        coro = self.run()
        try:
            pending = context.run(coro.send, None)
        except StopIteration:
            return
        self.task = asyncio.Task(_continue(coro, pending), loop=self.proto.loop, context=context)


@types.coroutine
def _drive(coro: Coroutine[Any, Any, None], pending: Any) -> Generator[Any, Any, None]:
    """Carry on a coroutine whose first step already ran and yielded ``pending``.

    The task running this sees ``pending`` exactly as if the coroutine had yielded it to the
    task directly (a future to wait for, or None to yield once), and everything the task
    sends or throws (results, cancellation) is passed through.
    """
    while True:
        try:
            value = yield pending
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                pending = coro.send(value)
            except StopIteration:
                return


async def _continue(coro: Coroutine[Any, Any, None], pending: Any) -> None:
    await _drive(coro, pending)

