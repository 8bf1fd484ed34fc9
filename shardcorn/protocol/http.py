"""The HTTP/1.1 connection: httptools parses, this class turns its callbacks into cycles.

Bytes arrive in :meth:`HttpProtocol.data_received` and go to the httptools parser, whose
callbacks build each request's scope. A request whose head is complete becomes a
:class:`RequestCycle`; cycles run one at a time, in order (pipelined requests wait their turn
with their bodies buffered). Anything malformed is answered by the protocol itself (4xx/5xx
and close) without calling the app, after the responses to the requests before it.

Limits guard the parser (httptools itself has none): the request line (414), the total
size and number of header fields (431), and the time to receive a head (408).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections import deque
from time import perf_counter
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools

from shardcorn.logs import TRACE, error_log, escape
from shardcorn.metrics.stats import ShardStats
from shardcorn.protocol.context import Connection, ShardContext
from shardcorn.protocol.cycle import BODY_HIGH_WATER, RequestCycle
from shardcorn.protocol.errors import ProtocolError, error_response
from shardcorn.protocol.http_validation import (
    ChunkFraming,
    check_content_length,
    check_trailer,
    host_is_valid,
)
from shardcorn.protocol.linger import Lingering, start_lingering
from shardcorn.protocol.proxy import apply_proxy_headers, peer_is_trusted
from shardcorn.protocol.write_progress import unsent_bytes

# How many parsed requests may wait behind the one being answered before we stop reading.
MAX_PIPELINE = 16
# Resume reading a paused request body once the app has taken it below this.
BODY_LOW_WATER = BODY_HIGH_WATER // 4
# Loop timers count whole milliseconds: one may fire up to a millisecond before its time.
TIMER_SLACK = 0.001
# Bypass httptools for the rest of a Content-Length body this large (see _pass_body). Below
# it, copying the body costs less than setting up the bypass and a fresh parser after it.
PASS_BODY_MIN = 64 * 1024
# The most request body one direct read (HttpProtocol.pull_body) takes from the socket.
PULL_MAX = 1024 * 1024
_PARSER = httptools.HttpRequestParser


def _too_much_framing() -> ProtocolError:
    return ProtocolError(400, "too much chunk framing (extensions or trailers)")


def _decode_path(raw_path: bytes) -> str:
    if b"%" not in raw_path and raw_path.isascii():
        return raw_path.decode("ascii")
    return unquote_to_bytes(raw_path).decode("utf-8", "replace")


def get_address(transport: asyncio.BaseTransport, name: str) -> tuple[str, int] | None:
    info = transport.get_extra_info(name)
    if isinstance(info, (list, tuple)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


class _BodyPassThrough:
    """Stands in for the httptools parser for the rest of a Content-Length body.

    Reads go to ``on_body`` uncopied (a read that also holds the start of the next request
    is split once); at the end of the body it calls ``on_message_complete``, puts a fresh
    httptools parser back (the old one still expects the body) and feeds it what follows.
    Errors surface as httptools' own exceptions, so data_received handles them as usual.
    """

    __slots__ = ("left", "proto")

    def __init__(self, proto: HttpProtocol, left: int) -> None:
        self.proto = proto
        self.left = left  # body bytes still to come

    def feed_data(self, data: bytes) -> None:
        proto = self.proto
        left = self.left
        size = len(data)
        if type(data) is not bytes:
            data = bytes(data)  # the app gets bytes, whatever buffer a transport hands us
        try:
            if size < left:
                self.left = left - size
                proto.on_body(data)
                return
            proto.on_body(data if size == left else data[:left])
            parser = proto.parser = _PARSER(proto)
            proto.on_message_complete()
        except httptools.HttpParserError:
            raise
        except Exception as exc:  # what httptools does with a callback's exception
            raise httptools.HttpParserCallbackError("callback failed") from exc
        if size > left:
            try:
                parser.feed_data(data[left:])
            except httptools.HttpParserUpgrade as upgrade:
                # data_received takes the offset as one into the whole read.
                offset = upgrade.args[0] if upgrade.args else size - left
                raise httptools.HttpParserUpgrade(left + offset) from None


class HttpProtocol(asyncio.Protocol, Connection):
    # Slots: a connection has more attributes than CPython's shared instance dicts hold
    # (30), so as plain attributes every ``self.x`` on the hot path was a dict lookup.
    # ``__dict__`` stays, for attributes not listed here.
    __slots__ = (
        "__dict__",
        "app",
        "base_context",
        "body_limit",
        "body_read_at",
        "body_size",
        "body_timer",
        "chained",
        "chunked",
        "chunks",
        "client",
        "closed",
        "ctx",
        "cycle",
        "declared_length",
        "drain_waiter",
        "expect_100",
        "forwarded",
        "framing",
        "head_began",
        "head_bytes",
        "head_deadline",
        "head_first",
        "head_size",
        "head_tail",
        "headers",
        "host_headers",
        "idle_since",
        "idle_timer",
        "in_head",
        "known_host",
        "launching",
        "lingering",
        "loop",
        "new_framings",
        "parser",
        "parsing",
        "pending_error",
        "pending_upgrade",
        "pipeline",
        "pull_fd",
        "read_paused",
        "requests_launched",
        "requests_seen",
        "response_timeout",
        "scheme",
        "scope_template",
        "server",
        "stats",
        "trailers",
        "transport",
        "trusted_peer",
        "upgrade_scope",
        "url",
        "websocket_upgrade",
        "write_backlog",
        "write_paused",
        "write_timer",
    )

    def __init__(self, ctx: ShardContext) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.app = ctx.app
        self.stats: ShardStats = ctx.stats
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.scheme = "https" if ctx.ssl_context is not None else "http"
        self.trusted_peer = False
        self.scope_template: dict[str, Any] = {}  # (connection_made)
        # Each request's app runs in a copy of this, never of the context of the request
        # whose send() happened to launch it.
        self.base_context = contextvars.copy_context()
        # the request being parsed
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0  # header bytes parsed (name + value + ": " + CRLF)
        self.head_bytes = 0  # bytes received while the head was incomplete
        self.head_began = False  # a head began in the data being parsed now
        self.head_first = False  # ... and it is the first message boundary in that data
        self.head_tail = b""  # the last bytes of the previous read, while a head is incomplete
        # --limit-request-body: the declared content-length and the body bytes counted so far
        # (counted only when a limit is set).
        self.body_limit = ctx.config.limit_request_body
        self.declared_length: int | None = None
        self.body_size = 0
        self.response_timeout = ctx.config.timeout_response
        self.in_head = False
        self.host_headers = 0
        # The last Host value found valid on this connection: a client sends the same one
        # in every request, and comparing it costs less than checking it again.
        self.known_host = b""
        self.expect_100 = False
        self.forwarded = False
        self.websocket_upgrade = False
        self.upgrade_scope: dict[str, Any] | None = None
        self.pending_upgrade: tuple[dict[str, Any], bytes] | None = None  # waits for idle
        self.parsing: RequestCycle | None = None
        # the request being answered, and those parsed behind it
        self.cycle: RequestCycle | None = None
        self.pipeline: deque[RequestCycle] = deque()
        self.requests_seen = 0
        self.requests_launched = 0  # not requests_seen: pipelined requests are parsed early
        self.pending_error: ProtocolError | None = None
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        # Keep-alive (see "keep-alive and timeouts"): when the connection went idle (None
        # while it is not), and its timer, which may still be armed while it is busy.
        self.idle_since: float | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.head_deadline: asyncio.TimerHandle | None = None
        # Hardening (see protocol/http_validation.py): Transfer-Encoding seen in this head,
        # chunk headers seen on this connection, the framing budget of a chunked body in
        # progress, and trailer fields of this request.
        self.chunked = False
        self.chunks = 0
        self.framing: ChunkFraming | None = None
        self.new_framings: list[ChunkFraming] | None = None  # whose heads ended in this read
        self.chained = 0  # the number of the chunked body whose end a read's pre-scan found
        self.trailers = 0
        # --timeout-request-body-idle: when request body bytes last arrived, and its timer.
        self.body_read_at = 0.0
        self.body_timer: asyncio.TimerHandle | None = None
        # --timeout-write: the transport's buffer when the timer was armed, and the timer.
        self.write_backlog = 0
        self.write_timer: asyncio.TimerHandle | None = None
        self.lingering: Lingering | None = None  # after an error response (protocol/linger.py)
        self.closed = False
        self.launching = False  # _start_next is running cycles (re-entry just returns)
        # The socket's descriptor when request bodies may be read from it directly (a plain
        # TCP or Unix socket); -1 otherwise (TLS: the bytes on the socket are not the body).
        self.pull_fd = -1

    # -- connection lifecycle --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        self.server = get_address(transport, "sockname")
        self.client = get_address(transport, "peername")
        trusted = self.ctx.trusted
        self.trusted_peer = trusted is not None and peer_is_trusted(
            trusted, self.client[0] if self.client else None
        )
        ctx = self.ctx
        # Every request's scope starts as a copy of this: one dict copy and a few stores are
        # cheaper than building a 13-key dict, and half of its values never change here.
        self.scope_template = {
            "type": "http",
            "asgi": ctx.asgi_version,
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": "GET",
            "root_path": ctx.root_path,
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "headers": [],
            "state": {},
        }
        if transport.get_extra_info("sslcontext") is None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                self.pull_fd = sock.fileno()
        ctx.connections.add(self)
        self.stats.connection_opened()
        if ctx.trace_enabled:
            error_log.log(TRACE, "%s - HTTP connection made", self._peer())
        if self.ctx.shutting_down:
            self.closed = True
            transport.close()
            return
        self._arm_keepalive()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed and self not in self.ctx.connections:
            return
        self.closed = True
        self.ctx.forget(self)
        self.stats.connection_closed()
        if self.ctx.trace_enabled:
            error_log.log(TRACE, "%s - HTTP connection lost", self._peer())
        self._cancel_keepalive()
        self._drop_idle_timer()
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None
        self._cancel_hardening_timers()
        for cycle in (self.cycle, self.parsing, *self.pipeline):
            if cycle is not None and not cycle.disconnected:
                cycle.disconnect()
        self.pipeline.clear()
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.drain_waiter = None

    # -- reading ---------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.idle_since is not None:  # _cancel_keepalive(), without the call
            self.idle_since = None
            self.stats.keepalive_idle(-1)
        scanned = -1
        if self.framing is not None:
            # A chunked body is in progress: follow its framing before parsing (the budget
            # on chunk extensions, http_validation.ChunkFraming).
            scanned = self._follow_chunks(data)
            if scanned == -2:
                return
        self.head_began = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade(data, upgrade)
            return
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)
            return
        if self.new_framings is not None and self._place_framings(data, scanned):
            return
        if self.parsing is not None and not self.in_head and self.parser.__class__ is _PARSER:
            self._pass_body()  # inside a request body: maybe read the rest past httptools
        if self.in_head:
            # The head is incomplete: bound its size (httptools buffers a header line of any
            # length until it ends, and keeps no limit of its own) and its time (a client
            # trickling bytes must not hold the slot forever). Bytes of the chunk the head
            # began in are not counted (the chunk may carry earlier requests too): they are
            # bounded by the transport's read size.
            if not self.head_began:
                self.head_bytes += len(data)
                config = self.ctx.config
                if self.head_bytes > config.limit_request_headers + config.limit_request_line:
                    self._protocol_error(ProtocolError(431, "Request Header Fields Too Large"))
                    return
            # The head's last bytes so far, however small the reads: its final CRLF CRLF may
            # straddle reads, and ChunkFraming looks for it.
            self.head_tail = (data if self.head_began else self.head_tail + data)[-3:]
            if self.head_deadline is None:
                self.head_deadline = self.loop.call_later(
                    self.ctx.config.timeout_request_header, self._head_timed_out
                )
        elif self.parsing is not None and self._body_progress(data):
            return
        self._start_next()

    def _parse_failed(self, exc: Exception) -> None:
        error = self.pending_error
        if error is None:
            message = str(exc)
            status = 400
            if message.startswith("Invalid HTTP version"):
                # A well-formed version we do not speak (HTTP/1.2, 3.0). A malformed one
                # ("HTTP/1.10", "HTTP/1.x", a space after it) is a plain 400.
                status = 505
            elif "transfer-encoding" in message.lower() and "invalid" in message.lower():
                status = 400
            error = ProtocolError(status, message or "Bad Request")
        self._protocol_error(error)

    def _protocol_error(self, error: ProtocolError) -> None:
        """Refuse the request being parsed. Requests before it are answered first."""
        self.pending_error = error
        self.in_head = False
        parsing, self.parsing = self.parsing, None
        if parsing is not None:
            if parsing is self.cycle and parsing.launched:
                # The app is already reading this body: it gets http.disconnect, and the
                # client gets the error now if no response has started.
                parsing.disconnect()
                if not parsing.writer.head_sent:
                    self.cycle = None
                    self._send_error_and_close(error)
                else:
                    self.abort()
                return
            # A request whose body is broken never reaches the app.
            if parsing is self.cycle:
                self.cycle = None
            elif parsing in self.pipeline:
                self.pipeline.remove(parsing)
        self.pause_reading()
        self._start_next()

    def _send_error_and_close(self, error: ProtocolError) -> None:
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return  # (e.g. the bytes after a "Connection: close" request: nobody is listening)
        # Debug, not warning: these are the client's doing (or --limit-concurrency doing its
        # job), and a flood of them must not flood the log.
        if error.status == 503:
            error_log.debug("%s - 503: --limit-concurrency reached", self._peer())
        else:
            error_log.debug(
                "%s - Invalid HTTP request (%d): %s",
                self._peer(),
                error.status,
                escape(error.reason),
            )
        self.stats.bad_request(error.status)
        detail = None if error.status != 400 else "Bad Request"
        transport.write(error_response(error.status, self.ctx.default_headers, detail))
        self._linger()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.declared_length = None
        self.body_size = 0
        self.head_size = 0
        self.head_bytes = 0
        # First boundary in this read: nothing of an earlier request precedes this head in it
        # (on_message_complete sets head_began too). ChunkFraming finds the head with it.
        self.head_first = not self.head_began
        self.head_began = True
        self.in_head = True
        self.host_headers = 0
        self.expect_100 = False
        self.forwarded = False
        self.websocket_upgrade = False
        self.chunked = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.ctx.config.limit_request_line:
            self.pending_error = ProtocolError(414, "URI Too Long")
            raise self.pending_error

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if value and value[-1] in (0x20, 0x09):
            # RFC 9110 5.5: trailing whitespace is not part of the value (llhttp keeps it).
            value = value.rstrip(b" \t")
        if not self.in_head:
            self._on_trailer(name, value)
            return
        headers = self.headers
        headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        config = self.ctx.config
        if (
            len(headers) > config.limit_request_fields
            or self.head_size > config.limit_request_headers
        ):
            self.pending_error = ProtocolError(431, "Request Header Fields Too Large")
            raise self.pending_error
        if name == b"host":
            self.host_headers += 1
            if value and value != self.known_host:
                if not host_is_valid(value):
                    # RFC 9112 3.2: a Host with an invalid field value is a 400.
                    self.pending_error = ProtocolError(400, "invalid Host header")
                    raise self.pending_error
                self.known_host = value
        elif name == b"expect":
            if value.lower() == b"100-continue":
                self.expect_100 = True
        elif name == b"transfer-encoding":
            # RFC 9112 6.1: we only implement chunked; any other coding is 501.
            codings = [c.strip().lower() for c in value.split(b",")]
            if any(c != b"chunked" for c in codings if c):
                self.pending_error = ProtocolError(501, "Unsupported Transfer-Encoding")
                raise self.pending_error
            self.chunked = True
        elif name == b"upgrade":
            if value.lower() == b"websocket":
                self.websocket_upgrade = True
        elif name[:12] == b"x-forwarded-":
            self.forwarded = True
        elif name == b"content-length" and value.isdigit():
            if len(value) > 18:  # 19 digits can exceed an int64 (llhttp allows up to 2**64)
                try:
                    check_content_length(value)
                except ProtocolError as exc:
                    self.pending_error = exc
                    raise
            if self.body_limit is not None:
                self.declared_length = int(value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_size = 0
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None
        parser = self.parser
        http_version = parser.get_http_version()
        if http_version not in ("1.1", "1.0"):
            self.pending_error = ProtocolError(505, "HTTP Version Not Supported")
            raise self.pending_error
        if self.host_headers != 1 and (http_version == "1.1" or self.host_headers > 1):
            # RFC 9112 3.2: a 400 for a 1.1 request without Host, and for any request with
            # more than one.
            self.pending_error = ProtocolError(400, "missing or duplicate Host header")
            raise self.pending_error
        if self.chunked and http_version == "1.0":
            # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding is faulty framing.
            self.pending_error = ProtocolError(400, "Transfer-Encoding in HTTP/1.0")
            raise self.pending_error
        limit = self.body_limit
        if limit is not None and self.declared_length is not None and self.declared_length > limit:
            # Refused before the app runs and before the body is sent (with 100-continue).
            self.pending_error = ProtocolError(413, "Content Too Large")
            raise self.pending_error
        url = self.url
        if url[:1] == b"/":
            raw_path, _, query = url.partition(b"?")
            # ``int in bytes`` (a memchr) costs a tenth of ``bytes in bytes`` here.
            if 35 in url:  # "#" (rare): a fragment, dropped
                query = query.partition(b"#")[0]
                raw_path = raw_path.partition(b"#")[0]
        elif url == b"*":
            raw_path, query = url, b""
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self.pending_error = ProtocolError(400, "invalid request target")
                raise self.pending_error from None
            raw_path = parsed.path or b"/"
            query = parsed.query or b""
            if 35 in raw_path:  # "#"
                raw_path = raw_path.partition(b"#")[0]
        ctx = self.ctx
        root_path = ctx.root_path
        if 37 not in raw_path and raw_path.isascii():  # no "%": no call, no unquote
            path = raw_path.decode("ascii")
        else:
            path = _decode_path(raw_path)
        if root_path:
            path = root_path + path
            raw_path = root_path.encode("ascii", "replace") + raw_path
        scope = self.scope_template.copy()
        scope["http_version"] = http_version
        scope["method"] = parser.get_method().decode("ascii", "replace")
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = query
        scope["headers"] = self.headers
        scope["state"] = ctx.lifespan_state.copy()
        if self.forwarded and self.trusted_peer:
            apply_proxy_headers(scope, self.headers, ctx.trusted)
        if self.websocket_upgrade and ctx.ws_enabled and parser.should_upgrade():
            # Handed to the WebSocket protocol when httptools raises HttpParserUpgrade.
            self.parsing = None
            self.upgrade_scope = scope
            return
        # RFC 9110 10.1.1: no 100 (Continue) for an HTTP/1.0 client.
        expect_100 = self.expect_100 and http_version == "1.1"
        cycle = RequestCycle(self, scope, parser.should_keep_alive(), expect_100)
        self.requests_seen += 1
        if self.websocket_upgrade or parser.should_upgrade():
            # An upgrade we do not perform (RFC 9110 7.8 lets us ignore it): serve it as
            # plain HTTP, then close, since the bytes after it are not HTTP.
            cycle.keep_alive = False
        if ctx.limit_concurrency is not None and ctx.over_limit():
            self.stats.concurrency_rejected()
            self.pending_error = ProtocolError(503, "Service Unavailable")
            raise self.pending_error
        self.parsing = cycle
        if self.chunked:
            self._track_chunks(cycle)
        if self.cycle is None:
            self.cycle = cycle
        else:
            self.pipeline.append(cycle)
            if len(self.pipeline) >= MAX_PIPELINE:
                self.pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is not None:
            self.body_size += len(body)
            limit = self.body_limit
            if limit is not None and self.body_size > limit:  # a chunked body grown past it
                self.pending_error = ProtocolError(413, "Content Too Large")
                raise self.pending_error
            cycle.feed_body(body)

    def on_chunk_header(self) -> None:
        self.chunks += 1

    def _pass_body(self) -> None:
        """Hand the rest of a large Content-Length body to on_body without httptools.

        httptools copies every piece of body into a new bytes object; the reads uvloop hands
        us are bytes already. Once the head is parsed and the body's length is known, a
        stand-in parser (:class:`_BodyPassThrough`) gives whole reads to on_body as they
        are, so a body that arrives over many reads reaches the app without a copy here.
        """
        cycle = self.parsing
        assert cycle is not None
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                length = int(value)  # llhttp has checked it: digits, and one value
            elif name == b"transfer-encoding":
                return  # chunked: httptools finds where the chunks end
        if length is None:
            return
        left = length - cycle.received
        if left >= PASS_BODY_MIN:
            self.parser = _BodyPassThrough(self, left)  # type: ignore[assignment]

    def pull_body(self, cycle: RequestCycle) -> bool:
        """Read more of ``cycle``'s body straight from the socket; True if some came.

        Called by an app's ``receive()`` that found nothing buffered. While a large
        Content-Length body is passed through (_pass_body), one non-blocking read of up to
        the rest of the body (at most PULL_MAX) hands the app what the socket holds now, in
        one bytes object the kernel wrote into: no copy out of the loop's read buffer, no
        loop iteration, no pause and resume of reading. The read never goes past the body,
        so a pipelined request behind it stays in the socket for the transport to read.
        Nothing there, or an error (which the transport's own read then finds and
        reports): the caller waits for the loop as usual.
        """
        parser = self.parser
        if not isinstance(parser, _BodyPassThrough) or self.parsing is not cycle:
            return False
        transport = self.transport
        # A closed transport's descriptor number may already belong to another connection.
        if self.pull_fd < 0 or self.closed or transport is None or transport.is_closing():
            return False
        left = parser.left
        try:
            data = os.read(self.pull_fd, left if left < PULL_MAX else PULL_MAX)
        except OSError:  # nothing yet (EAGAIN), or the connection's error
            return False
        if not data:
            return False  # end of stream: the transport's read reports it
        if self.body_timer is not None:
            self.body_read_at = self.loop.time()
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)
        return True

    def on_message_complete(self) -> None:
        self.framing = None
        self.head_began = True  # a message boundary in this read (see on_message_begin)
        cycle = self.parsing
        if cycle is not None:
            self.parsing = None
            cycle.end_body()

    # -- running cycles --------------------------------------------------------------------
    def _start_next(self) -> None:
        """Start the current cycle if it has not run; send a deferred error when idle.

        A cycle may finish inside its launch (an eager task that never waits) and make the
        next pipelined cycle current: this loop then launches that one, instead of each
        launch nesting inside the previous app's ``send`` (a pipelined burst of thousands of
        requests would otherwise overflow the stack).
        """
        if self.launching:
            return
        cycle = self.cycle
        if cycle is not None:
            if cycle.launched:
                return
            self.launching = True
            try:
                while True:
                    self._launch(cycle)
                    cycle = self.cycle
                    if cycle is None or cycle.launched:
                        break
            finally:
                self.launching = False
            if cycle is not None:
                return
        if self.pending_upgrade is not None:
            self._take_over()
            return
        error = self.pending_error
        if error is not None:
            self._send_error_and_close(error)
        elif self.parsing is None and not self.in_head and not self.closed:
            self._arm_keepalive()  # idle: nothing being answered, parsed or received

    def _launch(self, cycle: RequestCycle) -> None:
        ctx = self.ctx
        ctx.requests_in_flight += 1
        self.stats.request_started(self.requests_launched > 0)
        self.requests_launched += 1
        if ctx.max_requests is None:
            ctx.total_requests += 1  # all of count_request() without --limit-max-requests
        else:
            ctx.count_request()
            if ctx.total_requests >= ctx.max_requests:
                # The shard stops after this one (--limit-max-requests): tell the client.
                cycle.keep_alive = False
        cycle.launched = True
        if self.response_timeout is not None:
            cycle.deadline = self.loop.call_later(
                self.response_timeout, self._response_timed_out, cycle
            )
        cycle.start()

    def _account(self, cycle: RequestCycle, status: int) -> None:
        """Count a launched cycle as finished, exactly once."""
        if cycle.accounted:
            return
        cycle.accounted = True
        if cycle.deadline is not None:
            cycle.deadline.cancel()
        self.ctx.requests_in_flight -= 1
        self.stats.request_finished(cycle.method, status, perf_counter() - cycle.start_time)

    def response_complete(self, cycle: RequestCycle) -> None:
        """The app sent the last body message of ``cycle``."""
        ctx = self.ctx
        self._account(cycle, cycle.writer.status)
        if self.cycle is cycle:
            self.cycle = None
        if not cycle.writer.keep_alive or ctx.shutting_down or self.closed:
            self._close()
            return
        if self.pipeline:
            self.cycle = self.pipeline.popleft()
        if self.read_paused:
            self._resume_if_room()
        self._start_next()

    def app_failed(self, cycle: RequestCycle) -> None:
        """The app raised or broke the protocol: 500 if nothing was sent, else drop the line."""
        if cycle.complete:
            return
        cycle.complete = True
        if self.cycle is cycle:
            self.cycle = None
        if self.closed or self.transport is None or cycle.disconnected:
            self._account(cycle, cycle.writer.status or 500)
            return
        if not cycle.writer.head_sent:
            self._account(cycle, 500)
            if self.ctx.access_log_enabled:
                cycle.log_access(500)
            self.transport.write(error_response(500, self.ctx.default_headers))
        else:
            self._account(cycle, cycle.writer.status)
        self._close()

    def client_gone(self, cycle: RequestCycle) -> None:
        """The app finished a cycle whose client had disconnected: only bookkeeping."""
        cycle.complete = True
        if self.cycle is cycle:
            self.cycle = None
        self._account(cycle, cycle.writer.status or 499)

    def _response_timed_out(self, cycle: RequestCycle) -> None:
        """--timeout-response: the app has not finished in time; cancel it."""
        cycle.deadline = None
        task = cycle.task
        if cycle.accounted or task is None or task.done():
            return
        error_log.warning(
            "Request %s %s: no complete response after %gs (--timeout-response): cancelled",
            escape(cycle.method),
            escape(cycle.scope["path"]),
            self.response_timeout,
        )
        cycle.timed_out = True
        task.cancel()

    def app_timed_out(self, cycle: RequestCycle) -> None:
        """The app was cancelled by --timeout-response: 503 if nothing was sent, else drop."""
        cycle.complete = True
        if self.cycle is cycle:
            self.cycle = None
        transport = self.transport
        if cycle.disconnected or self.closed or transport is None:
            self._account(cycle, cycle.writer.status or 503)
            return
        if not cycle.writer.head_sent:
            self._account(cycle, 503)
            if self.ctx.access_log_enabled:
                cycle.log_access(503)
            transport.write(error_response(503, self.ctx.default_headers))
            self._close()
        else:
            self._account(cycle, cycle.writer.status)
            self.abort()

    def app_cancelled(self, cycle: RequestCycle) -> None:
        """Shutdown's deadline cancelled the app: close without a clean end."""
        cycle.complete = True
        self._account(cycle, cycle.writer.status or 503)
        if self.cycle is cycle:
            self.cycle = None
        self.abort()

    # -- writing and flow control ----------------------------------------------------------
    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(data)

    def writelines(self, buffers: list[bytes]) -> None:
        """Write ``buffers`` in order, in one system call where the transport can."""
        transport = self.transport
        if transport is not None and not self.closed:
            transport.writelines(buffers)

    def pause_writing(self) -> None:
        self.write_paused = True
        timeout = self.ctx.config.timeout_write
        transport = self.transport
        if timeout is not None and self.write_timer is None and transport is not None:
            self.write_backlog = unsent_bytes(transport)
            self.write_timer = self.loop.call_later(timeout, self._write_stalled)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        if not self.write_paused or self.closed:
            return
        waiter = self.drain_waiter
        if waiter is None:
            waiter = self.drain_waiter = self.loop.create_future()
        await waiter

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closed:
            if self.pending_error is not None:
                return
            self.read_paused = False
            self.transport.resume_reading()
            if self.body_timer is not None:
                self.body_read_at = self.loop.time()

    def body_consumed(self) -> None:
        """The app took buffered body: read more if we had stopped."""
        if self.read_paused:
            self._resume_if_room()

    def _resume_if_room(self) -> None:
        """Resume reading unless a queue is still full: the pipeline, or the body buffered
        for the request being received."""
        if len(self.pipeline) >= MAX_PIPELINE // 2:
            return
        cycle = self.parsing
        if cycle is not None and not cycle.complete and cycle.buffered > BODY_LOW_WATER:
            return
        self.resume_reading()

    # -- keep-alive and timeouts -----------------------------------------------------------
    # One timer per connection, re-armed lazily. Going idle records the time and going busy
    # clears it; neither touches the timer (a loop timer created and cancelled per request
    # cost more than the rest of the keep-alive logic together). When the timer fires, it
    # closes a connection idle for the whole timeout, re-arms for the rest of the timeout if
    # the connection went idle later, and lapses if the connection is busy: the next
    # _arm_keepalive starts it again.
    @property
    def keepalive_handle(self) -> asyncio.TimerHandle | None:
        """The keep-alive timer while it governs the connection (idle), else None."""
        return self.idle_timer if self.idle_since is not None else None

    def _arm_keepalive(self) -> None:
        transport = self.transport
        if (
            self.idle_since is None
            and not self.closed
            and transport is not None
            and not transport.is_closing()
        ):
            self.stats.keepalive_idle(1)
            self.idle_since = self.loop.time()
            if self.idle_timer is None:
                self.idle_timer = self.loop.call_later(
                    self.ctx.keep_alive_timeout, self._keepalive_check
                )

    def _cancel_keepalive(self) -> None:
        """The connection is not idle any more; an armed timer lapses when it fires."""
        if self.idle_since is not None:
            self.idle_since = None
            self.stats.keepalive_idle(-1)

    def _drop_idle_timer(self) -> None:
        timer = self.idle_timer
        if timer is not None:
            timer.cancel()
            self.idle_timer = None

    def _keepalive_check(self) -> None:
        self.idle_timer = None
        since = self.idle_since
        if since is None or self.closed:
            return  # busy: armed again when the connection next goes idle
        left = since + self.ctx.keep_alive_timeout - self.loop.time()
        if left > TIMER_SLACK:
            self.idle_timer = self.loop.call_later(left, self._keepalive_check)
            return
        self.idle_since = None
        self.stats.keepalive_idle(-1)
        if self.requests_seen:
            self.stats.keepalive_timeout()
        self._close()

    def _head_timed_out(self) -> None:
        self.head_deadline = None
        if self.in_head and not self.closed:
            self._protocol_error(ProtocolError(408, "Request Timeout"))

    # -- hardening: bodies, trailers, stalled writes, lingering ----------------------------
    def _body_progress(self, data: bytes) -> bool:
        """A read ended inside a request body (``data``: the whole read). True if refused."""
        self.body_read_at = self.loop.time()
        if self.body_timer is None:
            timeout = self.ctx.config.timeout_request_body_idle
            if timeout is not None:
                self.body_timer = self.loop.call_later(timeout, self._body_idle_check)
        framing = self.framing
        if (
            framing is not None
            and framing.counting
            and framing.count(data, self.body_size, self.chunks)
        ):
            self._protocol_error(_too_much_framing())
            return True
        return False

    def _track_chunks(self, cycle: RequestCycle) -> None:
        """A chunked request's head is complete: measure its framing from here on."""
        if not self.head_began:
            head_tail: bytes | None = self.head_tail  # the head began in an earlier read
        else:
            head_tail = b"" if self.head_first else None  # None: where it began is unknown
        framing = self.framing = ChunkFraming(cycle, self.requests_seen, head_tail)
        if self.new_framings is None:
            self.new_framings = [framing]
        else:
            self.new_framings.append(framing)
        self.trailers = 0

    def _follow_chunks(self, data: bytes) -> int:
        """Before a read is parsed: follow the chunked body in progress through it.

        Returns -2 if the body was refused, the offset just past its end if it ends in this
        read (its number is then in ``chained``), else -1.
        """
        framing = self.framing
        assert framing is not None
        if framing.counting:
            return -1  # measured after parsing instead (_body_progress)
        end = framing.scan(data)
        if end == -2:
            self._protocol_error(_too_much_framing())
            return -2
        if end >= 0:
            self.framing = None
            self.chained = framing.number
        elif framing.counting:
            framing.mark(self.body_size, self.chunks)  # lost: count from the next read
        return end

    def _place_framings(self, data: bytes, scanned: int) -> bool:
        """After a read is parsed: measure the bodies whose heads ended in it (a later one
        starts where the one before it ended). True if a request was refused."""
        framings = self.new_framings
        assert framings is not None
        self.new_framings = None
        previous_end, previous = scanned, self.chained
        for framing in framings:
            consecutive = previous_end >= 0 and framing.number == previous + 1
            start = framing.start(data, previous_end if consecutive else -1)
            previous_end = -1
            end = -1 if start < 0 else framing.scan(data, start)
            if end == -2:
                self._refuse_parsed(framing.cycle)
                return True
            if end >= 0:
                previous_end, previous = end, framing.number
                if self.framing is framing:
                    self.framing = None
            elif framing.counting and self.framing is framing:
                framing.mark(self.body_size, self.chunks)
        return False

    def _refuse_parsed(self, cycle: object) -> None:
        """Refuse a request found bad after its read was parsed: it and every request parsed
        after it are dropped (none of them has reached the app: apps start after parsing)."""
        if cycle is self.parsing:
            self._protocol_error(_too_much_framing())
            return
        if self.cycle is cycle:
            self.cycle = None
            self.pipeline.clear()
        elif cycle in self.pipeline:
            while self.pipeline.pop() is not cycle:
                pass
        self.parsing = None
        self.in_head = False
        self.framing = None
        self.pending_error = _too_much_framing()
        self.pause_reading()
        self._start_next()

    def _body_idle_check(self) -> None:
        """--timeout-request-body-idle: no body bytes for that long while we wanted them."""
        self.body_timer = None
        cycle = self.parsing
        timeout = self.ctx.config.timeout_request_body_idle
        if cycle is None or self.closed or timeout is None:
            return
        now = self.loop.time()
        if self.read_paused or cycle.expect_100:
            # We stopped reading (the app has not taken the body), or the client waits for
            # the 100 (Continue) the app has not asked for: neither is the client's delay.
            self.body_read_at = now
        idle = now - self.body_read_at
        if idle < timeout:
            self.body_timer = self.loop.call_later(timeout - idle, self._body_idle_check)
            return
        error_log.debug("%s - request body idle for %gs: giving up", self._peer(), idle)
        if cycle.complete:
            self._close()  # already answered: the connection just cannot be reused
        else:
            # The app, if reading, gets http.disconnect; the client a 408 if nothing was sent.
            self._protocol_error(ProtocolError(408, "Request Timeout"))

    def _on_trailer(self, name: bytes, value: bytes) -> None:
        """A trailer field: checked and counted, never added to the scope (ASGI has no
        request trailers, and the app already has the headers)."""
        try:
            check_trailer(name)
        except ProtocolError as exc:
            self.pending_error = exc
            raise
        self.trailers += 1
        self.head_size += len(name) + len(value) + 4
        config = self.ctx.config
        if (
            self.trailers > config.limit_request_fields
            or self.head_size > config.limit_request_headers
        ):
            self.pending_error = ProtocolError(431, "Request Header Fields Too Large")
            raise self.pending_error

    def _write_stalled(self) -> None:
        """--timeout-write: the client has read nothing of what we wrote for that long."""
        self.write_timer = None
        transport = self.transport
        timeout = self.ctx.config.timeout_write
        if not self.write_paused or self.closed or transport is None or timeout is None:
            return
        backlog = unsent_bytes(transport)
        if backlog < self.write_backlog:
            # Some progress: a slow reader is still a reader.
            self.write_backlog = backlog
            self.write_timer = self.loop.call_later(timeout, self._write_stalled)
            return
        error_log.debug("%s - client read nothing for %gs: closing", self._peer(), timeout)
        self.abort()  # send() returns; the app's receive() says http.disconnect

    def _linger(self) -> None:
        """Close after an error response, reading and dropping what the client still sends
        for a short while so that it sees the response, not a reset (protocol/linger.py)."""
        transport = self.transport
        lingering = None if transport is None else start_lingering(transport, self.loop)
        if lingering is None:
            self._close()
            return
        self._cancel_keepalive()
        self._cancel_hardening_timers()
        # Nothing more is parsed, answered or written: the stand-in parser only counts.
        self.framing = self.new_framings = None
        self.closed = True
        self.parser = lingering  # type: ignore[assignment]  # only feed_data() is called now
        self.lingering = lingering

    def _cancel_hardening_timers(self) -> None:
        for timer in (self.body_timer, self.write_timer, self.lingering):
            if timer is not None:
                timer.cancel()
        self.body_timer = self.write_timer = None

    # -- upgrade ---------------------------------------------------------------------------
    def _upgrade(self, data: bytes, upgrade: httptools.HttpParserUpgrade) -> None:
        scope = self.upgrade_scope
        if scope is None:
            # An upgrade we do not perform (not WebSocket, or --ws none): the request
            # was served as plain HTTP and the connection closes after it.
            self.pause_reading()
            self._start_next()
            return
        offset = upgrade.args[0] if upgrade.args else len(data)
        leftover = data[offset:] if isinstance(offset, int) else b""
        # Requests pipelined before the upgrade are answered first: the switch waits until
        # the connection is idle, or the 101 would overtake their responses.
        self.pending_upgrade = (scope, leftover)
        self.pause_reading()
        self._start_next()

    def _take_over(self) -> None:
        """Hand the (now idle) connection to the WebSocket protocol."""
        assert self.pending_upgrade is not None and self.transport is not None
        scope, leftover = self.pending_upgrade
        self.pending_upgrade = None
        from shardcorn.protocol.websocket import take_over

        self._cancel_keepalive()
        self.ctx.forget(self)
        # The socket stays open: the WebSocket protocol inherits its connections_open count
        # and lowers it when the socket closes (see protocol/websocket.py, "Counting").
        self.closed = True
        if self.read_paused:
            # The WebSocket protocol manages reading from here on, starting from "reading".
            self.read_paused = False
            self.transport.resume_reading()
        take_over(self.ctx, self.transport, scope, leftover)

    # -- shutting down ---------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.cycle is not None or self.parsing is not None

    def shutdown(self) -> None:
        """Close now unless a response is in progress; then close after it.

        A request still being received, with no app running for it yet (or whose response
        is already complete), is dropped: it has not been started, so nothing is lost.
        """
        if self.cycle is None:
            self._close()
        else:
            self.cycle.keep_alive = False

    def cancel(self) -> None:
        for cycle in (self.cycle, *self.pipeline):
            if cycle is not None and cycle.task is not None and not cycle.task.done():
                cycle.task.cancel()
        self.abort()

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _peer(self) -> str:
        client = self.client
        return f"{client[0]}:{client[1]}" if client else "-"

    def _close(self) -> None:
        transport = self.transport
        self._cancel_keepalive()
        self._drop_idle_timer()
        if transport is not None and not transport.is_closing():
            transport.close()
