"""WebSocket connections (RFC 6455) for ASGI apps, framed by wsproto.

**The hand-over.** :class:`~shardcorn.protocol.http.HttpProtocol` parses an ``Upgrade:
websocket`` request with httptools like any other, builds its scope, and when httptools stops
at the upgrade calls :func:`take_over` with the transport, that scope and the bytes that came
after the request head. The request is never turned back into text: ``ws_handshake`` checks the
parsed method, version and header list, and once the app accepts, a wsproto ``Connection``
(frames only) takes over the byte stream. We do the handshake ourselves rather than through
wsproto's ``H11Handshake`` because that class only takes raw bytes, which it parses again with
h11; doing it here also lets refusals (400, 426, 403, 500, the app's Denial Response) go out
through the same response code as every other HTTP answer, with the server/date headers.

**``--ws none``.** HttpProtocol then never calls us: it ignores the ``Upgrade`` header (RFC 9110
7.8 allows that) and passes the request to the app as a plain ``http`` request, then closes the
connection after the response. A WebSocket client sees whatever the app answers to an HTTP GET
(typically 404, or 200 for a catch-all page) instead of ``101``, fails its handshake with that
status, and the connection is closed; the server goes on serving everyone else.

**Life of a connection** (``ws_messages.State``; ``NEXT`` there lists every transition)::

    HANDSHAKE --accept--> OPEN --our Close--> CLOSING --peer's Close--> CLOSED
        |                   '--peer's Close, protocol error, transport lost--> CLOSED
        |--websocket.http.response.start--> DENYING --last body--> CLOSED
        '--websocket.close (403), app error (500), client gone--> CLOSED

**Counting.** The socket was counted once by HttpProtocol when it was accepted
(``connections_accepted`` and the ``connections_open`` gauge). On hand-over HttpProtocol leaves
the gauge alone and this protocol lowers it when the socket closes, so an upgraded socket is
open exactly once and accepted exactly once. The handshake is one request: it is in flight
(and counts for ``--limit-concurrency`` and ``--limit-max-requests``) until the app answers,
and is recorded with the status it got (101, 403, the denial status, 500). An accepted socket
then counts in the ``websockets_open`` gauge; it stays in ``ctx.connections`` until it closes,
so open WebSockets count against ``--limit-concurrency`` like keep-alive connections.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import MutableMapping
from time import perf_counter
from typing import Any

from wsproto.connection import Connection as FrameConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message, Ping, Pong
from wsproto.extensions import Extension

from shardcorn.logs import TRACE, error_log, log_request
from shardcorn.protocol.context import Connection, ShardContext
from shardcorn.protocol.errors import error_response
from shardcorn.protocol.response import AppProtocolError, ResponseWriter
from shardcorn.protocol.ws_extensions import MessageSizeGuard
from shardcorn.protocol.ws_handshake import (
    HandshakeError,
    HandshakeRequest,
    accept_response,
    negotiate_deflate,
    read_request,
)
from shardcorn.protocol.ws_keepalive import Keepalive
from shardcorn.protocol.ws_messages import (
    FAILURE_REASONS,
    NEXT,
    ClientDisconnectedError,
    MessageAssembler,
    State,
    accept_choices,
    close_args,
    data_event,
)

# Bytes a client may send after its handshake before the app has accepted it; past this we
# stop reading until the app decides (a well-behaved client sends nothing before the 101).
PENDING_LIMIT = 64 * 1024
# Seconds to wait for the peer's answer to our Close frame, and for our last bytes to leave
# once we close: a peer that neither answers nor reads is then dropped. The websockets
# library uses the same default for its close_timeout.
CLOSE_TIMEOUT = 10.0
_SCHEMES = {"http": "ws", "https": "wss"}
_CONNECT = {"type": "websocket.connect"}


def take_over(
    ctx: ShardContext, transport: asyncio.Transport, scope: dict[str, Any], leftover: bytes
) -> None:
    """Serve ``transport`` as a WebSocket from now on; ``scope`` is the parsed upgrade request."""
    protocol = WebSocketProtocol(ctx, transport, scope)
    transport.set_protocol(protocol)
    ctx.connections.add(protocol)
    protocol.start(leftover)


def shutdown_close_code(ctx: ShardContext) -> int:
    """1012 when the shard is recycled (--limit-max-requests: a new one replaces it, so clients
    may reconnect at once), otherwise 1001: the server is going away."""
    limit = ctx.max_requests
    return 1012 if limit is not None and ctx.total_requests >= limit else 1001


class WebSocketProtocol(asyncio.Protocol, Connection):
    def __init__(
        self, ctx: ShardContext, transport: asyncio.Transport, scope: dict[str, Any]
    ) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.stats = ctx.stats
        self.config = ctx.config
        self.transport = transport
        self.method: str = scope.pop("method", "GET")
        scope["type"] = "websocket"
        scope["scheme"] = _SCHEMES.get(scope["scheme"], scope["scheme"])
        scope["subprotocols"] = []
        scope["extensions"] = {"websocket.http.response": {}}
        self.scope = scope
        self.state = State.HANDSHAKE
        self.request: HandshakeRequest | None = None
        self.frames: FrameConnection | None = None  # wsproto, once the app has accepted
        self.pending_in = bytearray()  # bytes received before the accept
        # messages for the app, and the one being reassembled from its fragments
        self.queue: deque[dict[str, Any]] = deque()
        self.max_queue = self.config.ws_max_queue
        self.assembler = MessageAssembler()
        self.pull_paused = False  # the queue is full: frames wait, unparsed, in wsproto
        self.read_paused = False
        self.receive_waiter: asyncio.Future[None] | None = None
        self.connect_delivered = False
        self.failure: tuple[int, str] | None = None  # a protocol error, until we close for it
        self.close_code: int | None = None  # what the app gets in websocket.disconnect
        self.close_reason = ""
        self.lost = False  # connection_lost has run
        # writing
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.denial: ResponseWriter | None = None
        # timers
        config = self.config
        self.keepalive = Keepalive(
            self.loop, config.ws_ping_interval, config.ws_ping_timeout, self._ping, self._peer_dead
        )
        self.close_timer: asyncio.TimerHandle | None = None
        # the handshake as a request, for the stats and the access log
        self.task: asyncio.Task[None] | None = None
        self.start_time = perf_counter()
        self.in_flight = False
        self.opened = False  # counted in the websockets_open gauge
        self.shutdown_requested = False

    def _move(self, state: State) -> None:
        if state is not self.state:
            if state not in NEXT[self.state]:  # pragma: no cover - a bug here, not input
                raise RuntimeError(f"WebSocket state {self.state.name} -> {state.name}")
            self.state = state

    # -- the handshake ---------------------------------------------------------------------
    def start(self, leftover: bytes) -> None:
        """Check the upgrade request and hand the connect event to the app."""
        ctx = self.ctx
        scope = self.scope
        try:
            self.request = read_request(self.method, scope["http_version"], scope["headers"])
        except HandshakeError as exc:
            if ctx.trace_enabled:
                error_log.log(TRACE, "Invalid WebSocket handshake: %s", exc.reason)
            self.stats.bad_request(exc.status)
            self._refuse(exc.status, exc.reason, exc.headers)
            return
        if ctx.shutting_down or ctx.over_limit():
            self.stats.concurrency_rejected()
            self.stats.bad_request(503)
            self._refuse(503, None)
            return
        scope["subprotocols"] = self.request.subprotocols
        self.pending_in += leftover
        ctx.requests_in_flight += 1
        self.in_flight = True
        self.stats.request_started(False)
        ctx.count_request()
        self.task = self.loop.create_task(self.run())
        self._update_reading()

    def _finish_request(self, status: int) -> None:
        """The handshake got its answer: count it once, and log it."""
        if self.in_flight:
            self.in_flight = False
            self.ctx.requests_in_flight -= 1
            self.stats.request_finished(self.method, status, perf_counter() - self.start_time)
        if self.ctx.access_log_enabled:
            self._log_access(status)

    def _log_access(self, status: int) -> None:
        log_request(self.scope, self.method, status)

    def _refuse(
        self, status: int, detail: str | None, extra_headers: bytes = b"", code: int = 1006
    ) -> None:
        """Answer the upgrade request with an HTTP error and close.

        ``code`` is what the app's ``websocket.disconnect`` will say: no WebSocket ever opened
        (1006), unless the app refused with a ``websocket.close`` of its own.
        """
        self._write(error_response(status, self.ctx.default_headers + extra_headers, detail))
        self._finish_request(status)
        self._record_close(code, "")
        self._finish()

    def _accept(self, message: MutableMapping[str, Any]) -> None:
        request = self.request
        assert request is not None
        protocol, checked = accept_choices(message, request.subprotocols)
        config = self.config
        extensions: list[Extension] = []
        extension_header = None
        if config.ws_per_message_deflate:
            negotiated = negotiate_deflate(request.extension_offers, config.ws_max_size)
            if negotiated is not None:
                extensions.append(negotiated[0])
                extension_header = negotiated[1]
        # After the deflate extension, so it counts bytes as the app will get them.
        extensions.append(MessageSizeGuard(config.ws_max_size))
        self._write(
            accept_response(
                request.key, protocol, extension_header, self.ctx.default_headers, checked
            )
        )
        frames = self.frames = FrameConnection(ConnectionType.SERVER, extensions)
        self._move(State.OPEN)
        self.opened = True
        self.stats.websocket_opened()
        self._finish_request(101)
        self.keepalive.start()
        pending, self.pending_in = bytes(self.pending_in), bytearray()
        if pending:
            frames.receive_data(pending)
        self._update_reading()
        self._pull_events()
        if self.shutdown_requested and self.state is State.OPEN:
            self._start_close(shutdown_close_code(self.ctx), "")

    def _deny(self, message: MutableMapping[str, Any]) -> None:
        status: Any = message.get("status")
        if type(status) is int and status < 200:
            # A 1xx is not an answer: the client would wait for another, or take 101 as an accept.
            raise AppProtocolError(f"a denial response needs a final status, got {status}")
        writer = ResponseWriter()
        writer.start(
            status,
            message.get("headers") or (),
            self.ctx.default_headers,
            head_request=False,
            keep_alive=False,
            http11=self.scope["http_version"] == "1.1",
        )
        self.denial = writer
        self._move(State.DENYING)
        self._finish_request(writer.status)

    def _deny_body(self, message: MutableMapping[str, Any]) -> None:
        writer = self.denial
        assert writer is not None
        data = writer.body(message.get("body", b""), message.get("more_body", False))
        if data:
            self._write(data)
        if writer.finished:
            self._record_close(1006, "")
            self._finish()

    # -- reading ---------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        frames = self.frames
        if frames is None:
            if self.state is State.HANDSHAKE:
                self.pending_in += data
                self._update_reading()
            return  # a refused handshake: whatever follows is not ours to read
        if frames.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
            frames.receive_data(data)
            if not self.pull_paused:
                self._pull_events()

    def eof_received(self) -> bool | None:
        return None  # a half-closed WebSocket is a closed one: let the transport close

    def _pull_events(self) -> None:
        """Turn buffered frames into messages until the app's queue is full."""
        frames = self.frames
        assert frames is not None
        for event in frames.events():
            if isinstance(event, Message):
                self._on_data(event)
                if len(self.queue) >= self.max_queue:
                    # Stop here: later frames stay unparsed in wsproto's buffer and reading
                    # stops, so the queue holds at most --ws-max-queue messages.
                    self.pull_paused = True
                    self.keepalive.hold()
                    self._update_reading()
                    return
            elif isinstance(event, Ping):
                if frames.state is ConnectionState.OPEN:
                    self._write(frames.send(event.response()))
            elif isinstance(event, Pong):
                self.keepalive.alive()
            elif isinstance(event, CloseConnection):
                self._on_close(event, frames)
                return

    def _on_data(self, event: Message[Any]) -> None:
        if self.state is not State.OPEN:
            return  # after our Close, data is read (to find the peer's Close) and dropped
        message = self.assembler.add(event)
        if message is not None:
            self.queue.append(message)
            self.stats.websocket_message(True)
            self._wake()

    def _on_close(self, event: CloseConnection, frames: FrameConnection) -> None:
        if frames.state is ConnectionState.REMOTE_CLOSING:
            # The peer started the closing handshake: echo its code (RFC 6455 5.5.1), close.
            self._record_close(event.code, event.reason or "")
            self._write(frames.send(event.response()))
        elif frames.state is not ConnectionState.CLOSED:
            # wsproto could not parse the input: fail the connection (RFC 6455 7.1.7) with the
            # code it chose (1002, 1007, or 1009 from our size limits).
            code = int(event.code)
            if self.ctx.trace_enabled:
                error_log.log(TRACE, "WebSocket protocol error (%d): %s", code, event.reason)
            self.failure = (code, FAILURE_REASONS.get(code, event.reason or ""))
            if self.queue and self.state is State.OPEN:
                # The messages before the bad frame were valid: the app gets them, and its
                # answers go out before our Close (receive() fails the connection once the
                # queue is empty; CLOSE_TIMEOUT bounds the wait). Nothing more is read.
                self.pull_paused = True
                self._update_reading()
                self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._fail)
                return
            self._fail()
            return
        # else: the peer answered our Close; the closing handshake is complete.
        self._finish()

    def _fail(self) -> None:
        """Fail the connection: our Close with the failure's code, then close at once."""
        failure, self.failure = self.failure, None
        if failure is None:
            return
        self._record_close(*failure)
        frames = self.frames
        if self.state is State.OPEN and frames is not None and frames.state is ConnectionState.OPEN:
            self._write(frames.send(CloseConnection(*failure)))
        self._finish()

    def _update_reading(self) -> None:
        paused = self.pull_paused or (
            self.state is State.HANDSHAKE and len(self.pending_in) > PENDING_LIMIT
        )
        if paused is not self.read_paused and not self.lost:
            self.read_paused = paused
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    # -- the ASGI callables ----------------------------------------------------------------
    async def receive(self) -> dict[str, Any]:
        if not self.connect_delivered:
            self.connect_delivered = True
            return _CONNECT.copy()
        while True:
            queue = self.queue
            if queue:
                message = queue.popleft()
                # Resume at half full, not at the first free slot: pausing and resuming the
                # transport for every message would cost more than the messages.
                if self.pull_paused and len(queue) <= self.max_queue // 2:
                    self._resume_pulling()
                return message
            if self.failure is not None:
                self._fail()
            if self.state is State.CLOSED:
                return {
                    "type": "websocket.disconnect",
                    "code": self.close_code if self.close_code is not None else 1006,
                    "reason": self.close_reason,
                }
            waiter = self.receive_waiter = self.loop.create_future()
            await waiter

    def _resume_pulling(self) -> None:
        if self.failure is not None:
            return  # nothing after a bad frame is read
        self.pull_paused = False
        self.keepalive.release()
        if self.state in (State.OPEN, State.CLOSING) and self.frames is not None:
            self._pull_events()
        self._update_reading()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        try:
            mtype = message["type"]
            state = self.state
            if state is State.OPEN:
                if mtype == "websocket.send":
                    await self._send_data(message)
                elif mtype == "websocket.close":
                    self._start_close(*close_args(message))
                else:
                    raise AppProtocolError(
                        f"expected 'websocket.send' or 'websocket.close', got {mtype!r}"
                    )
            elif state is State.HANDSHAKE:
                if mtype == "websocket.accept":
                    self._accept(message)
                elif mtype == "websocket.close":
                    # ASGI: closing before accepting refuses the handshake with 403.
                    self._refuse(403, None, code=close_args(message)[0])
                elif mtype == "websocket.http.response.start":
                    self._deny(message)
                else:
                    raise AppProtocolError(
                        "expected 'websocket.accept', 'websocket.close' or "
                        f"'websocket.http.response.start', got {mtype!r}"
                    )
            elif state is State.DENYING:
                if mtype != "websocket.http.response.body":
                    raise AppProtocolError(
                        f"expected 'websocket.http.response.body', got {mtype!r}"
                    )
                self._deny_body(message)
            elif mtype != "websocket.close":
                # CLOSING or CLOSED. A second close is harmless (apps close in `finally`).
                raise ClientDisconnectedError(f"the WebSocket is closed; cannot send {mtype!r}")
        except AppProtocolError as exc:
            # The app broke the ASGI contract: raised from its own send() call, so its
            # traceback shows where; run() then answers 500 or closes with 1011.
            raise RuntimeError(str(exc)) from None

    async def _send_data(self, message: MutableMapping[str, Any]) -> None:
        event = data_event(message)
        frames = self.frames
        assert frames is not None
        self._write(frames.send(event))
        self.stats.websocket_message(False)
        if self.write_paused:
            await self._drain()

    # -- running the app -------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self.ctx.app(self.scope, self.receive, self.send)
        except ClientDisconnectedError:
            pass  # ASGI: the app may let our own exception escape; it is not an error
        except GeneratorExit:
            raise  # the loop is closing and discards this coroutine: nothing can be sent
        except asyncio.CancelledError:
            # The shutdown deadline (cancel()) or the loop stopping: nothing more to send.
            self._drop()
            raise
        except BaseException as exc:
            error_log.error("Exception in ASGI application", exc_info=exc)
            self._app_failed()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return
        else:
            self._app_returned()
        if self.in_flight:  # pragma: no cover - every path above answers the handshake
            self._finish_request(500)

    def _app_failed(self) -> None:
        """After an exception: 500 if nothing was sent, close 1011 once open."""
        state = self.state
        if state is State.HANDSHAKE:
            self._refuse(500, None)
        elif state is State.DENYING:
            writer = self.denial
            if writer is not None and not writer.head_sent:
                self._write(error_response(500, self.ctx.default_headers))
                self._finish()
            else:
                self._drop()  # a response cut short must not look complete
        elif state is State.OPEN:
            self._start_close(1011, "")

    def _app_returned(self) -> None:
        state = self.state
        if state is State.HANDSHAKE:
            error_log.error("ASGI callable returned without accepting or closing the WebSocket")
            self._refuse(500, None)
        elif state is State.DENYING:
            error_log.error("ASGI callable returned without completing the denial response")
            self._app_failed()
        elif state is State.OPEN:
            self._start_close(1000, "")  # the app is done with the conversation

    # -- closing ---------------------------------------------------------------------------
    def _start_close(self, code: int, reason: str) -> None:
        """Send our Close and wait (CLOSE_TIMEOUT at most) for the peer's."""
        frames = self.frames
        if self.state is not State.OPEN or frames is None:
            return
        self._write(frames.send(CloseConnection(code, reason)))
        self._move(State.CLOSING)
        self._record_close(code, reason)
        self.keepalive.stop()
        self._arm_close_timer()

    def _record_close(self, code: int, reason: str) -> None:
        """Remember the first close code: the one whoever started closing gave."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason

    def _finish(self) -> None:
        """No more WebSocket traffic: close the transport once our last bytes are out."""
        self._move(State.CLOSED)
        self.keepalive.stop()
        self._wake()
        if not self.lost:
            self.transport.close()
            self._arm_close_timer()  # a peer that never reads must not hold the socket

    def _arm_close_timer(self) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self.close_timer = None
        self._record_close(1006, "")
        self._drop()

    def _drop(self) -> None:
        """Close at once, discarding anything unsent."""
        if self.state is not State.CLOSED:
            self._record_close(1006, "")
            self._move(State.CLOSED)
        self.keepalive.stop()
        self._wake()
        if not self.lost:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        self._record_close(1006, "")
        if self.state is not State.CLOSED:
            self._move(State.CLOSED)
        if self.in_flight:  # the client left while the app was deciding
            self.in_flight = False
            self.ctx.requests_in_flight -= 1
            self.stats.request_finished(self.method, 499, perf_counter() - self.start_time)
        self.ctx.forget(self)
        self.stats.connection_closed()
        if self.opened:
            self.opened = False
            self.stats.websocket_closed()
        self.keepalive.stop()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        self._wake()
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- keepalive pings -------------------------------------------------------------------
    def _ping(self, payload: bytes) -> None:
        frames = self.frames
        if self.state is State.OPEN and frames is not None:
            self._write(frames.send(Ping(payload)))

    def _peer_dead(self) -> None:
        error_log.debug("WebSocket ping timeout: dropping the connection")
        self._drop()

    # -- writing and flow control ----------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if not self.lost and not self.transport.is_closing():
            self.transport.write(data)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _drain(self) -> None:
        if self.lost:
            return
        waiter = self.drain_waiter
        if waiter is None:
            waiter = self.drain_waiter = self.loop.create_future()
        await waiter

    def _wake(self) -> None:
        waiter, self.receive_waiter = self.receive_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- shutting down ---------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.state is not State.CLOSED

    def shutdown(self) -> None:
        """Close an open WebSocket with 1012/1001; one still in its handshake once accepted."""
        self.shutdown_requested = True
        if self.state is State.OPEN:
            self._start_close(shutdown_close_code(self.ctx), "")

    def cancel(self) -> None:
        task = self.task
        if task is not None and not task.done():
            task.cancel()
        self.abort()

    def abort(self) -> None:
        if not self.lost:
            self._drop()
