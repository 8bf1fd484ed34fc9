"""The app's side of a WebSocket, sans-IO: the states of a connection, and the ASGI
messages an app sends, checked and turned into what goes on the wire.

Every check raises :class:`AppProtocolError` with a message naming the ASGI key at fault; the
protocol turns it into a RuntimeError raised from the app's ``send()``, so the app's own
traceback shows where it went wrong (then: 500 before the accept, close 1011 after).
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from enum import Enum
from typing import Any

from wsproto.events import BytesMessage, Message, TextMessage

from shardcorn.protocol.response import AppProtocolError

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Headers the server writes itself in a 101: an app copy would contradict or duplicate them.
_RESERVED = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
        b"content-length",
        b"transfer-encoding",
    }
)
# Close codes an app may send (RFC 6455 7.4.1 and the IANA registry; 3000-4999 are free to
# use). 1004-1006 and 1015 are reserved: never on the wire.
SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

# The reason we give with the close code when the peer breaks the protocol.
FAILURE_REASONS = {
    1002: "protocol error",
    1007: "invalid frame payload data",
    1009: "message too big",
}


class ClientDisconnectedError(OSError):
    """Raised by ``send()`` once the WebSocket is closed (ASGI spec 2.4: an OSError)."""


class State(Enum):
    HANDSHAKE = "handshake"  # the app has the connect event and has not answered yet
    DENYING = "denying"  # the app is sending an HTTP Denial Response
    OPEN = "open"  # accepted: messages flow both ways
    CLOSING = "closing"  # our Close frame is sent; waiting for the peer's
    CLOSED = "closed"  # no more WebSocket traffic; the transport is closed or closing


NEXT: dict[State, frozenset[State]] = {
    State.HANDSHAKE: frozenset({State.DENYING, State.OPEN, State.CLOSED}),
    State.DENYING: frozenset({State.CLOSED}),
    State.OPEN: frozenset({State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class MessageAssembler:
    """Joins the pieces wsproto hands out (a frame may arrive in several reads, a message in
    several frames) into one ``websocket.receive`` message."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[Any] = []

    def add(self, event: Message[Any]) -> dict[str, Any] | None:
        """The finished message, or None while it is still incomplete."""
        parts = self._parts
        if not event.message_finished:
            parts.append(event.data)
            return None
        data = event.data
        if parts:
            parts.append(data)
            data = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
            parts.clear()
        if isinstance(event, BytesMessage):
            return {"type": "websocket.receive", "bytes": bytes(data)}
        return {"type": "websocket.receive", "text": data}


def check_subprotocol(subprotocol: object, offered: list[str]) -> bytes | None:
    """The app's chosen subprotocol as header bytes (AppProtocolError if unusable)."""
    if subprotocol is None:
        return None
    if not isinstance(subprotocol, str):
        raise AppProtocolError(f"websocket.accept: subprotocol must be a str, got {subprotocol!r}")
    if subprotocol not in offered:
        # Clients fail a handshake that picks a subprotocol they did not offer (RFC 6455 4.1).
        raise AppProtocolError(f"websocket.accept: subprotocol {subprotocol!r} was not offered")
    return subprotocol.encode("ascii")


def check_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """Validate the extra headers of ``websocket.accept`` (AppProtocolError if invalid)."""
    checked: list[tuple[bytes, bytes]] = []
    if headers is None:
        return checked
    try:
        items = list(headers)
    except TypeError:
        raise AppProtocolError(f"websocket.accept: headers must be iterable: {headers!r}") from None
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise AppProtocolError(f"a header must be a (name, value) pair: {item!r}") from None
        if not isinstance(name, (bytes, bytearray)) or not isinstance(value, (bytes, bytearray)):
            raise AppProtocolError(f"headers must be bytes: {item!r}")
        name, value = bytes(name), bytes(value)
        if _TOKEN.fullmatch(name) is None:
            raise AppProtocolError(f"invalid header name {name!r}")
        if _BAD_VALUE.search(value) is not None:
            raise AppProtocolError(f"invalid header value for {name!r}")
        if name.lower() in _RESERVED:
            raise AppProtocolError(f"header {name!r} is set by the server in a 101 response")
        checked.append((name, value))
    return checked


def accept_choices(
    message: MutableMapping[str, Any], offered: list[str]
) -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
    """``websocket.accept``'s subprotocol (as header bytes) and extra headers, checked."""
    headers = check_headers(message.get("headers"))
    subprotocol = message.get("subprotocol")
    named = [value for name, value in headers if name.lower() == b"sec-websocket-protocol"]
    if named:
        # The spec wants the subprotocol key, but apps written for other servers put it in
        # a header: take it from there rather than send the header twice.
        if subprotocol is not None or len(named) > 1:
            raise AppProtocolError("websocket.accept: give the subprotocol once")
        subprotocol = named[0].decode("latin-1")
        headers = [pair for pair in headers if pair[0].lower() != b"sec-websocket-protocol"]
    return check_subprotocol(subprotocol, offered), headers


def data_event(message: MutableMapping[str, Any]) -> Message[Any]:
    """The wsproto event for a ``websocket.send`` message."""
    text = message.get("text")
    data = message.get("bytes")
    if text is not None and data is None:
        if not isinstance(text, str):
            raise AppProtocolError(
                f"websocket.send: 'text' must be a str, not {type(text).__name__}"
            )
        return TextMessage(data=text)
    if data is not None and text is None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise AppProtocolError(
                f"websocket.send: 'bytes' must be bytes, not {type(data).__name__}"
            )
        return BytesMessage(data=bytes(data))
    raise AppProtocolError("websocket.send needs exactly one of 'bytes' and 'text'")


def close_args(message: MutableMapping[str, Any]) -> tuple[int, str]:
    code = message.get("code")
    reason = message.get("reason")
    if code is None:
        code = 1000
    if type(code) is not int or not (code in SENDABLE_CODES or 3000 <= code <= 4999):
        raise AppProtocolError(f"websocket.close: {code!r} is not a close code an app may send")
    if reason is None:
        reason = ""
    if not isinstance(reason, str):
        raise AppProtocolError(
            f"websocket.close: 'reason' must be a str, got {type(reason).__name__}"
        )
    return code, reason
