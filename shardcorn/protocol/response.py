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
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_NO_BODY_STATUS = frozenset({204, 304})
# RFC 9110 8.6: no content-length in a 1xx or 204 response.
_NO_LENGTH_STATUS = frozenset({*range(100, 200), 204})


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


class ResponseWriter:
    """Frames one response. Create one per request; feed it start, then body messages."""

    __slots__ = (
        "_close_requested",
        "_head",
        "_head_request",
        "_http11",
        "_keep_alive",
        "_length",
        "_mode",
        "_no_body",
        "_own_connection",
        "_remaining",
        "bytes_sent",
        "finished",
        "status",
    )

    # framing modes
    LENGTH, CHUNKED, CLOSE, EMPTY = range(4)

    def __init__(self) -> None:
        self._head = b""
        self._mode = -1
        self._remaining = 0
        self._length: int | None = None
        self._no_body = False
        self._keep_alive = True
        self._http11 = True
        self._own_connection = False
        self._close_requested = False
        self._head_request = False
        self.status = 0
        self.bytes_sent = 0
        self.finished = False

    @property
    def head_sent(self) -> bool:
        """Whether the status line and headers have been handed out to be written."""
        return self._mode >= 0

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request after this response."""
        return self._keep_alive

    def start(
        self,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        default_headers: bytes,
        *,
        head_request: bool,
        keep_alive: bool,
        http11: bool,
    ) -> None:
        """Validate and remember the head; it is sent with the first body message.

        ``default_headers`` is the pre-encoded block of server/date/--header lines; a
        ``server`` or ``date`` header from the app replaces ours.
        """
        if type(status) is not int:
            if not isinstance(status, int) or isinstance(status, bool):
                raise AppProtocolError(f"the response status must be an int, got {status!r}")
            status = int(status)  # an IntEnum such as http.HTTPStatus.OK
        parts = [status_line(status)]
        length: int | None = None
        own_server = own_date = own_connection = False
        close_requested = False
        for item in headers:
            try:
                name, value = item
            except (TypeError, ValueError):
                raise AppProtocolError(
                    f"a response header must be a (name, value) pair: {item!r}"
                ) from None
            if type(name) is not bytes or type(value) is not bytes:
                if not isinstance(name, (bytes, bytearray)) or not isinstance(
                    value, (bytes, bytearray)
                ):
                    raise AppProtocolError(f"response headers must be bytes: {item!r}")
                name, value = bytes(name), bytes(value)
            if _TOKEN.fullmatch(name) is None:
                raise AppProtocolError(f"invalid response header name {name!r}")
            if _BAD_VALUE.search(value) is not None:
                raise AppProtocolError(f"invalid response header value for {name!r}")
            lower = name.lower()
            if lower == b"content-length":
                if not value.isdigit():  # int() would take "+1", " 1", "1_0"
                    raise AppProtocolError(f"invalid content-length {value!r}")
                new_length = int(value)
                if length is not None and length != new_length:
                    raise AppProtocolError(f"conflicting content-length {value!r}")
                length = new_length
                if status in _NO_LENGTH_STATUS:
                    continue
            elif lower == b"connection":
                own_connection = True
                if b"close" in value.lower():
                    close_requested = True
            elif lower == b"server":
                own_server = True
            elif lower == b"date":
                own_date = True
            elif lower == b"transfer-encoding":
                # We frame the body ourselves; an app-supplied framing header would lie.
                continue
            parts.append(b"%s: %s\r\n" % (name, value))
        if own_server or own_date:
            kept = []
            for line in default_headers.split(b"\r\n"):
                lower_line = line.lower()
                if not line or (own_server and lower_line.startswith(b"server:")):
                    continue
                if own_date and lower_line.startswith(b"date:"):
                    continue
                kept.append(line + b"\r\n")
            default_headers = b"".join(kept)
        parts.insert(1, default_headers)
        self.status = status
        self._own_connection = own_connection
        self._close_requested = close_requested
        self._head_request = head_request
        self._no_body = head_request or status < 200 or status in _NO_BODY_STATUS
        self._length = None if status in _NO_LENGTH_STATUS else length
        self._keep_alive = keep_alive and not close_requested
        self._head = b"".join(parts)
        self._http11 = http11

    def body(self, data: bytes, more_body: bool) -> bytes:
        """Return the bytes to write for one body message (the head too, the first time)."""
        if self.finished:
            raise AppProtocolError("http.response.body sent after the response was complete")
        mode = self._mode
        if mode < 0:
            return self._first_body(data, more_body)
        if mode == self.LENGTH:
            size = len(data)
            if size > self._remaining:
                raise AppProtocolError("the response body is longer than its content-length")
            self._remaining -= size
            if not more_body:
                self._finish_length()
            self.bytes_sent += size
            return data
        if mode == self.CHUNKED:
            if not more_body:
                self.finished = True
                if data:
                    self.bytes_sent += len(data)
                    return b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)
                return b"0\r\n\r\n"
            if not data:
                return b""
            self.bytes_sent += len(data)
            return b"%x\r\n%b\r\n" % (len(data), data)
        if mode == self.CLOSE:
            if not more_body:
                self.finished = True
            self.bytes_sent += len(data)
            return data
        # EMPTY: the body is dropped (HEAD, 204, 304, 1xx)
        if not more_body:
            self.finished = True
        return b""

    def _finish_length(self) -> None:
        self.finished = True
        if self._remaining:
            raise AppProtocolError("the response body is shorter than its content-length")

    def _connection_line(self) -> bytes:
        """Say what happens to the connection, unless the app already said it."""
        if not self._keep_alive:
            # Closing overrides whatever else the app said ("close" wins in a list).
            return b"" if self._close_requested else b"connection: close\r\n"
        if self._own_connection or self._http11:
            return b""
        return b"connection: keep-alive\r\n"

    def _first_body(self, data: bytes, more_body: bool) -> bytes:
        head = self._head
        self._head = b""
        length = self._length
        if self._no_body:
            # The app's headers (a HEAD answer's content-length included) go out as given.
            # A HEAD answer given its whole body at once gets the content-length that GET
            # would have had.
            if self._head_request and length is None and data and not more_body:
                head += b"content-length: %d\r\n" % len(data)
            self._mode = self.EMPTY
            self.finished = not more_body
            return head + self._connection_line() + b"\r\n"
        if length is not None:
            # Check before anything is handed out, so a wrong length on the first body
            # message still lets the caller answer 500 instead of a broken response.
            if len(data) > length:
                raise AppProtocolError("the response body is longer than its content-length")
            if not more_body and len(data) < length:
                raise AppProtocolError("the response body is shorter than its content-length")
            self._mode = self.LENGTH
            self._remaining = length
            return head + self._connection_line() + b"\r\n" + self.body(data, more_body)
        if not more_body:
            # The whole body is here: a content-length is cheaper than chunking.
            self._mode = self.LENGTH
            self._remaining = 0
            self.finished = True
            self.bytes_sent = len(data)
            return b"%b%bcontent-length: %d\r\n\r\n%b" % (
                head,
                self._connection_line(),
                len(data),
                data,
            )
        if self._http11:
            self._mode = self.CHUNKED
            head += self._connection_line() + b"transfer-encoding: chunked\r\n\r\n"
            return head + self.body(data, more_body)
        # HTTP/1.0 without a length: the end of the body is the end of the connection.
        self._mode = self.CLOSE
        self._keep_alive = False
        return head + self._connection_line() + b"\r\n" + self.body(data, more_body)
