"""Serialising one HTTP/1.1 response: status line, headers, framing. Sans-IO.

:class:`ResponseWriter` takes the app's ``http.response.start`` and ``http.response.body``
messages and returns the bytes to write. It decides the framing once, at the first body
message, so a small response goes out as one buffer (head and body together):

* the app gave ``content-length``: that many bytes, no more, no less;
* no body allowed (HEAD, 1xx, 204, 304): nothing is sent, whatever the app gives (a HEAD
  answer keeps the app's content-length, or gets the length of the body the app gave);
* the first body message is also the last: we know the length, so we add ``content-length``;
* otherwise HTTP/1.1 gets ``transfer-encoding: chunked``, HTTP/1.0 a body ended by closing.

Problems caused by the app raise :class:`AppProtocolError`; the caller logs them and
answers 500 (if nothing was sent yet) or closes the connection.

Speed: this runs for every response, so the common shapes take a short path. Header names a
shard has already validated are remembered (see :data:`KnownNames`), header values are checked
for CR, LF and NUL in one pass over the joined header block, and a large body is never copied
next to its head or chunk framing: :meth:`ResponseWriter.frame` returns a list of buffers
for the transport's ``writelines`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_NO_BODY_STATUS = frozenset({204, 304})
# RFC 9110 8.6: no content-length in a 1xx or 204 response.
_NO_LENGTH_STATUS = frozenset({*range(100, 200), 204})

# What the writer does with a response header, by lower-cased name; any other name passes.
_PLAIN, _CONTENT_LENGTH, _CONNECTION, _SERVER, _DATE, _TRANSFER_ENCODING = range(6)
_KINDS = {
    b"content-length": _CONTENT_LENGTH,
    b"connection": _CONNECTION,
    b"server": _SERVER,
    b"date": _DATE,
    b"transfer-encoding": _TRANSFER_ENCODING,
}


class KnownHeaders:
    """What one shard remembers of the response headers its app sends, to check less.

    * ``names``: header names already validated, as the app spelled them -> ``_PLAIN`` or
      ``_CONTENT_LENGTH``. Apps send the same few names in every response: a dict hit
      replaces a regular-expression match and a ``lower()`` per header. Names that need
      more than passing through or a length check (connection, server, date,
      transfer-encoding) are never in it.
    * ``last``: the last header list that took that path, with the block and length it gave.
      Many responses repeat their predecessor's headers exactly (same content type, same
      length); one list comparison, in C, then replaces the whole loop.

    Each shard has its own: nothing is shared between shards on the hot path.
    """

    __slots__ = ("last", "last_block", "last_length", "names")

    def __init__(self) -> None:
        self.names: dict[bytes, int] = {}
        self.last: list[tuple[bytes, bytes]] | None = None
        self.last_block = b""
        self.last_length: int | None = None


# A shard stops learning names past this many: an app that invents names (x-request-<id>)
# gets them checked every time instead of growing the dict without bound.
KNOWN_NAMES_LIMIT = 1024

# From this size on a body is written beside its head or chunk framing (the transport's
# writelines: one writev) rather than copied into one buffer with it. Copying a few KiB costs
# less than the second buffer does; copying 64 KiB costs several microseconds.
JOIN_LIMIT = 8 * 1024

Output = bytes | list[bytes]
"""What to write for one body message: one buffer, or buffers to write in order."""

# Framing modes, decided at the first body message (-1 before it).
_LENGTH, _CHUNKED, _CLOSE, _EMPTY = range(4)


class AppProtocolError(Exception):
    """The app broke the ASGI/HTTP contract (bad header, wrong length, wrong message order)."""


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, _reason(code)) for code in range(100, 600)
}


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        raise AppProtocolError(f"invalid HTTP status code {status!r}")
    return line


class _Fields:
    """The app's headers, checked: the block to send and what the writer must know."""

    __slots__ = ("block", "close_requested", "length", "own_connection", "own_date", "own_server")

    def __init__(self, block: bytes, length: int | None) -> None:
        self.block = block
        self.length = length
        self.own_connection = self.close_requested = self.own_server = self.own_date = False


def _known_fields(
    headers: Iterable[Any], known: KnownHeaders, status: int
) -> tuple[bytes | None, int | None]:
    """The header block and content-length, if every name is one this shard has already
    validated; (None, None) otherwise.

    This path only has to be right when all is well: on anything else it gives up, and
    :func:`_checked_fields` finds and names the problem. A list of (bytes, bytes) tuples it
    accepts becomes ``known.last``, so an identical list next time skips even this loop
    (only immutable items: a bytearray changed in place would make the copy lie).
    """
    names = known.names
    parts: list[bytes] = []
    length = None
    immutable = True
    try:
        for item in headers:
            name, value = item
            # ``int in bytes`` is a memchr; a value that is not a buffer raises TypeError.
            if 10 in value or 13 in value or 0 in value:
                return None, None
            if names[name]:  # _CONTENT_LENGTH, the only other kind kept in ``names``
                if not value.isdigit():  # int() would take "+1", " 1", "1_0"
                    return None, None
                new_length = int(value)
                if length is not None and length != new_length:
                    return None, None
                length = new_length
                if status in _NO_LENGTH_STATUS:
                    continue
            if type(value) is not bytes or type(item) is not tuple:
                immutable = False
            parts += (name, b": ", value, b"\r\n")
        block = b"".join(parts)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, None
    if immutable and type(headers) is list and status not in _NO_LENGTH_STATUS:
        known.last = list(headers)
        known.last_block = block
        known.last_length = length
    return block, length


def _checked_fields(headers: Iterable[Any], status: int, known: dict[bytes, int] | None) -> _Fields:
    """Check every header, raising AppProtocolError for the first bad one; learn names."""
    parts = []
    length: int | None = None
    own_server = own_date = own_connection = close_requested = False
    for item in headers:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise AppProtocolError(
                f"a response header must be a (name, value) pair: {item!r}"
            ) from None
        learnable = type(name) is bytes
        if not learnable or type(value) is not bytes:
            if not isinstance(name, (bytes, bytearray)) or not isinstance(
                value, (bytes, bytearray)
            ):
                raise AppProtocolError(f"response headers must be bytes: {item!r}")
            name, value = bytes(name), bytes(value)
        if _TOKEN.fullmatch(name) is None:
            raise AppProtocolError(f"invalid response header name {name!r}")
        if _BAD_VALUE.search(value) is not None:
            raise AppProtocolError(f"invalid response header value for {name!r}")
        kind = _KINDS.get(name.lower(), _PLAIN)
        if (
            known is not None
            and learnable
            and kind <= _CONTENT_LENGTH
            and len(known) < KNOWN_NAMES_LIMIT
        ):
            known[name] = kind
        if kind == _CONTENT_LENGTH:
            if not value.isdigit():  # int() would take "+1", " 1", "1_0"
                raise AppProtocolError(f"invalid content-length {value!r}")
            new_length = int(value)
            if length is not None and length != new_length:
                raise AppProtocolError(f"conflicting content-length {value!r}")
            length = new_length
            if status in _NO_LENGTH_STATUS:
                continue
        elif kind == _CONNECTION:
            own_connection = True
            if b"close" in value.lower():
                close_requested = True
        elif kind == _SERVER:
            own_server = True
        elif kind == _DATE:
            own_date = True
        elif kind == _TRANSFER_ENCODING:
            # We frame the body ourselves; an app-supplied framing header would lie.
            continue
        parts.append(b"%s: %s\r\n" % (name, value))
    fields = _Fields(b"".join(parts), length)
    fields.own_connection = own_connection
    fields.close_requested = close_requested
    fields.own_server = own_server
    fields.own_date = own_date
    return fields


def _without_defaults(default_headers: bytes, server: bool, date: bool) -> bytes:
    """The default header lines minus the server and/or date line the app replaces."""
    kept = []
    for line in default_headers.split(b"\r\n"):
        lower_line = line.lower()
        if not line or (server and lower_line.startswith(b"server:")):
            continue
        if date and lower_line.startswith(b"date:"):
            continue
        kept.append(line + b"\r\n")
    return b"".join(kept)


def _chunk(data: bytes, last: bool) -> Output:
    """``data`` as one chunk (the last chunk and the end of the body too, if ``last``)."""
    end = b"\r\n0\r\n\r\n" if last else b"\r\n"
    if len(data) >= JOIN_LIMIT:
        return [b"%x\r\n" % len(data), data, end]
    return b"%x\r\n%b%b" % (len(data), data, end)


class ResponseWriter:
    """Frames one response. Create one per request; feed it start, then body messages."""

    __slots__ = (
        "_close_requested",
        "_head",
        "_head_request",
        "_http11",
        "_length",
        "_mode",
        "_no_body",
        "_own_connection",
        "_remaining",
        "bytes_sent",
        "finished",
        "keep_alive",
        "status",
    )

    # framing modes (kept as names for callers; the module constants are what is used)
    LENGTH, CHUNKED, CLOSE, EMPTY = _LENGTH, _CHUNKED, _CLOSE, _EMPTY

    def __init__(self) -> None:
        # Only what can be read before start(); start() sets the rest.
        self._mode = -1
        # Whether the connection may carry another request after this response.
        self.keep_alive = True
        self.status = 0
        self.bytes_sent = 0
        self.finished = False

    @property
    def head_sent(self) -> bool:
        """Whether the status line and headers have been handed out to be written."""
        return self._mode >= 0

    def start(  # noqa: PLR0917 - the hot path passes these by position (see cycle.send)
        self,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        default_headers: bytes,
        head_request: bool,
        keep_alive: bool,
        http11: bool,
        known: KnownHeaders | None = None,
    ) -> None:
        """Validate and remember the head; it is sent with the first body message.

        ``default_headers`` is the pre-encoded block of server/date/--header lines; a
        ``server`` or ``date`` header from the app replaces ours. ``known`` is what the shard
        remembers of its app's headers (none: check every header).
        """
        if type(status) is not int:
            if not isinstance(status, int) or isinstance(status, bool):
                raise AppProtocolError(f"the response status must be an int, got {status!r}")
            status = int(status)  # an IntEnum such as http.HTTPStatus.OK
        line = STATUS_LINES.get(status)
        if line is None:
            raise AppProtocolError(f"invalid HTTP status code {status!r}")
        block = None
        if known is not None:
            if type(headers) is list:
                if headers == known.last and status not in _NO_LENGTH_STATUS:
                    # The same headers as the last response that took the short path.
                    block, length = known.last_block, known.last_length
            elif type(headers) is not tuple:
                # Read a one-shot iterable once: the checking path may have to read it again.
                headers = list(headers)
            if block is None:
                block, length = _known_fields(headers, known, status)
        if block is not None:
            self._own_connection = self._close_requested = False
            self.keep_alive = keep_alive
        else:
            fields = _checked_fields(headers, status, known.names if known else None)
            block, length = fields.block, fields.length
            if fields.own_server or fields.own_date:
                default_headers = _without_defaults(
                    default_headers, fields.own_server, fields.own_date
                )
            self._own_connection = fields.own_connection
            self._close_requested = fields.close_requested
            self.keep_alive = keep_alive and not fields.close_requested
        self.status = status
        self._head_request = head_request
        self._no_body = head_request or status < 200 or status in _NO_BODY_STATUS
        self._length = None if status in _NO_LENGTH_STATUS else length
        # Joined with the rest of the head (and a small body) at the first body message.
        self._head = (line, default_headers, block)
        self._http11 = http11

    def body(self, data: bytes, more_body: bool) -> bytes:
        """Return the bytes to write for one body message (the head too, the first time)."""
        out = self.frame(data, more_body)
        return out if isinstance(out, bytes) else b"".join(out)

    def frame(self, data: bytes, more_body: bool) -> Output:
        """Like :meth:`body`, but a large body comes back beside its framing, not copied."""
        mode = self._mode
        if mode < 0:  # (never finished yet)
            return self._first_body(data, more_body)
        if mode == _LENGTH:
            if self.finished:
                raise AppProtocolError("http.response.body sent after the response was complete")
            size = len(data)
            if size > self._remaining:
                raise AppProtocolError("the response body is longer than its content-length")
            self._remaining -= size
            self.bytes_sent += size
            if not more_body:
                self.finished = True
                if self._remaining:
                    raise AppProtocolError("the response body is shorter than its content-length")
            return data
        if self.finished:
            raise AppProtocolError("http.response.body sent after the response was complete")
        if mode == _CHUNKED:
            if not more_body:
                self.finished = True
                if data:
                    self.bytes_sent += len(data)
                    return _chunk(data, last=True)
                return b"0\r\n\r\n"
            if not data:
                return b""  # an empty chunk would end the body
            self.bytes_sent += len(data)
            return _chunk(data, last=False)
        if mode == _CLOSE:
            if not more_body:
                self.finished = True
            self.bytes_sent += len(data)
            return data
        # EMPTY: the body is dropped (HEAD, 204, 304, 1xx)
        if not more_body:
            self.finished = True
        return b""

    def _connection_line(self) -> bytes:
        """Say what happens to the connection, unless the app already said it."""
        if not self.keep_alive:
            # Closing overrides whatever else the app said ("close" wins in a list).
            return b"" if self._close_requested else b"connection: close\r\n"
        if self._own_connection or self._http11:
            return b""
        return b"connection: keep-alive\r\n"

    def _first_body(self, data: bytes, more_body: bool) -> Output:
        line, defaults, block = self._head
        length = self._length
        size = len(data)
        if self._no_body:
            # The app's headers (a HEAD answer's content-length included) go out as given.
            # A HEAD answer given its whole body at once gets the content-length that GET
            # would have had.
            head = line + defaults + block
            if self._head_request and length is None and data and not more_body:
                head += b"content-length: %d\r\n" % size
            self._mode = _EMPTY
            self.finished = not more_body
            return head + self._connection_line() + b"\r\n"
        # Keep-alive on HTTP/1.1 needs no connection header: say so without a call.
        conn = b"" if self.keep_alive and self._http11 else self._connection_line()
        if length is not None:
            # Check before anything is handed out, so a wrong length on the first body
            # message still lets the caller answer 500 instead of a broken response.
            if size > length:
                raise AppProtocolError("the response body is longer than its content-length")
            if not more_body and size < length:
                raise AppProtocolError("the response body is shorter than its content-length")
            self._mode = _LENGTH
            self._remaining = length - size
            self.finished = not more_body
            framing = b"\r\n"
        elif not more_body:
            # The whole body is here: a content-length is cheaper than chunking.
            self._mode = _LENGTH
            self._remaining = 0
            self.finished = True
            framing = b"content-length: %d\r\n\r\n" % size
        elif self._http11:
            self._mode = _CHUNKED
            head = b"".join((line, defaults, block, conn, b"transfer-encoding: chunked\r\n\r\n"))
            if not data:
                return head
            self.bytes_sent = size
            framed = _chunk(data, last=False)
            return [head, *framed] if isinstance(framed, list) else head + framed
        else:
            # HTTP/1.0 without a length: the end of the body is the end of the connection.
            self._mode = _CLOSE
            self.keep_alive = False
            conn = self._connection_line()
            framing = b"\r\n"
        self.bytes_sent = size
        if size >= JOIN_LIMIT:
            return [b"".join((line, defaults, block, conn, framing)), data]
        return b"".join((line, defaults, block, conn, framing, data))
