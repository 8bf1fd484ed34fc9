"""One HTTP request/response cycle: the ``receive`` and ``send`` an ASGI app is given.

A cycle buffers its request body (the connection pauses reading above a high-water mark),
frames its response through :class:`ResponseWriter`, and reports back to its connection
when the response is complete.

The app runs in an ``asyncio.Task`` of its own, in a fresh copy of the connection's context
(never of another request's: a pipelined request is launched from inside the previous one's
``send``). On Python 3.12+ the task is *eager*: its first step runs at once, inside the task,
so a handler that answers without waiting finishes before ``data_received`` returns and costs
no loop iteration. Running that first step without any task would be cheaper still, but then
``asyncio.current_task()`` is None, and anyio (Starlette's thread pool, cancel scopes),
sniffio and ``asyncio.timeout`` all fail in it, so Python 3.10/3.11 get a plain task, named
(an unnamed task formats a "Task-<n>" name for itself, which costs more than the rest of
its set-up).

The request body is kept as the list of chunks the parser handed over and is joined only
when the app takes more than one at once: a body that arrives in one read reaches the app
without being copied here. When the app asks and nothing is buffered, the rest of a large
Content-Length body is read from the socket there and then (HttpProtocol.pull_body).
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import MutableMapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from shardcorn.logs import error_log, log_request
from shardcorn.protocol.response import AppProtocolError, ResponseWriter

if TYPE_CHECKING:
    from shardcorn.protocol.http import HttpProtocol

# Pause reading from the socket when this much request body waits for the app.
BODY_HIGH_WATER = 64 * 1024

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Every request task has this name (see the module docstring for why it is not left unset).
TASK_NAME = "shardcorn-request"
_DISCONNECT = {"type": "http.disconnect"}


class RequestCycle:
    __slots__ = (
        "accounted",
        "buffered",
        "chunks",
        "complete",
        "deadline",
        "disconnected",
        "expect_100",
        "keep_alive",
        "last_body_sent",
        "launched",
        "method",
        "more_body",
        "proto",
        "received",
        "scope",
        "start_time",
        "started",
        "task",
        "timed_out",
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
        # Request body the app has not taken yet: an empty tuple until some arrives (most
        # requests have none, and need no list).
        self.chunks: list[bytes] | tuple[()] = ()
        self.buffered = 0  # bytes in chunks
        self.received = 0  # request body bytes read, taken by the app or not
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
        self.deadline: asyncio.TimerHandle | None = None  # --timeout-response
        self.timed_out = False
        self.start_time = perf_counter()

    # -- events from the connection --------------------------------------------------------
    def feed_body(self, data: bytes) -> None:
        self.received += len(data)
        if self.complete or self.disconnected:
            return  # the app has answered; the rest of the body is read and dropped
        chunks = self.chunks
        if chunks:
            chunks.append(data)
        else:
            self.chunks = [data]
        self.buffered += len(data)
        if self.waiter is not None:
            self._wake()
        if self.buffered > BODY_HIGH_WATER:
            self.proto.pause_reading()

    def end_body(self) -> None:
        self.more_body = False
        if self.waiter is not None:
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
            if self.disconnected or self.complete:
                # ASGI: receive() after the response has been sent, or after the client
                # went away, says http.disconnect.
                return _DISCONNECT.copy()
            chunks = self.chunks
            if chunks or (not self.more_body and not self.last_body_sent):
                if len(chunks) == 1:
                    body = chunks[0]  # handed over as the parser gave it: no copy
                elif chunks:
                    body = b"".join(chunks)
                else:
                    body = b""
                self.chunks = ()
                self.buffered = 0
                more_body = self.more_body
                if not more_body:
                    self.last_body_sent = True
                proto = self.proto
                if proto.read_paused:
                    proto.body_consumed()
                return {"type": "http.request", "body": body, "more_body": more_body}
            # Nothing buffered: a large body may be read from the socket at once.
            if self.more_body and self.proto.pull_body(self):
                continue
            # Nothing to hand over: more body is on its way, or the request is fully read
            # and only the end of the response or a disconnect can come next. Either way,
            # wait; never spin.
            self.proto.body_consumed()
            waiter = self.proto.loop.create_future()
            other = self.waiter
            if other is None or other.done():
                self.waiter = waiter
            else:
                # Another task is already waiting (a disconnect listener beside a body
                # reader): chain a future of our own, so that neither waiter is lost and
                # cancelling one never cancels the other.
                other.add_done_callback(functools.partial(_release, waiter))
            await waiter

    async def send(self, message: MutableMapping[str, Any]) -> None:
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
            writer = self.writer
            proto = self.proto
            # Access log off (the usual case) costs one attribute here, not a property call.
            log = proto.ctx.access_log_enabled and not writer.head_sent
            out = writer.frame(message.get("body", b""), message.get("more_body", False))
            if log:
                self.log_access(writer.status)  # logged when the head really goes out
            transport = proto.transport
            if transport is not None and not proto.closed:  # (proto.write, inlined)
                if isinstance(out, list):
                    transport.writelines(out)  # a large body beside its framing, not copied
                elif out:
                    transport.write(out)
            if writer.finished:
                self.complete = True
                if self.waiter is not None:
                    self._wake()  # a receive() waiting in another task returns http.disconnect
                proto.response_complete(self)
            elif proto.write_paused:
                await proto.drain()
            return
        if mtype != "http.response.start":
            raise RuntimeError(f"expected 'http.response.start', got {mtype!r}")
        if self.disconnected:
            self.started = True
            return
        ctx = self.proto.ctx
        keep_alive = self.keep_alive and not ctx.shutting_down
        if self.expect_100 and self.more_body:
            # "Expect: 100-continue" unanswered and the body not received: the client may
            # send that body or not, so nothing after it could be framed. Say we close.
            keep_alive = False
        try:
            self.writer.start(  # by position: keywords cost a name match each in 3.11
                message["status"],
                message.get("headers", ()),
                ctx.default_headers,
                self.method == "HEAD",
                keep_alive,
                self.scope["http_version"] == "1.1",
                ctx.known_headers,
            )
        except AppProtocolError as exc:
            raise RuntimeError(str(exc)) from None
        self.started = True

    def log_access(self, status: int) -> None:
        log_request(self.scope, self.method, status)

    # -- running the app -------------------------------------------------------------------
    async def run(self) -> None:
        proto = self.proto
        try:
            app: Any = proto.app  # (typed to return None; a returned value is reported)
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, GeneratorExit):
                raise  # the coroutine is being closed: it must not go on
            if isinstance(exc, asyncio.CancelledError):
                if self.timed_out:
                    proto.app_timed_out(self)
                    return
                if proto.ctx.shutting_down:
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

    # Starting the app: one method per Python version, so that the hot path makes no
    # extra call to choose.
    if sys.version_info >= (3, 12):

        def start(self) -> None:
            """Start the app in its own task, eagerly: its first step runs now."""
            proto = self.proto
            self.task = asyncio.Task(
                self.run(),
                loop=proto.loop,
                context=proto.base_context.copy(),
                eager_start=True,
                name=TASK_NAME,
            )

    elif sys.version_info >= (3, 11):

        def start(self) -> None:
            """Start the app in its own task."""
            proto = self.proto
            loop = proto.loop
            if loop.get_task_factory() is not None:
                # A task factory the app installed decides what a task is: honour it.
                self.task = proto.base_context.copy().run(loop.create_task, self.run())
                return
            # The constructor, not loop.create_task: the same task, two calls and a name fewer.
            self.task = asyncio.Task(
                self.run(), loop=loop, context=proto.base_context.copy(), name=TASK_NAME
            )

    else:

        def start(self) -> None:
            """Start the app in its own task."""
            proto = self.proto
            # Task(context=...) is 3.11+; a task copies the context it is created in.
            self.task = proto.base_context.copy().run(proto.loop.create_task, self.run())


def request_tasks() -> list[asyncio.Task[Any]]:
    """The running loop's unfinished request tasks (for shutdown; not for the hot path)."""
    code = RequestCycle.run.__code__
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and getattr(task.get_coro(), "cr_code", None) is code
    ]


def _release(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)
