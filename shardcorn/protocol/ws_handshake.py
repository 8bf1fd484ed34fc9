"""The RFC 6455 opening handshake, server side, from headers httptools already parsed. Sans-IO.

The HTTP protocol hands over the upgrade request as a scope (method, version, header list);
nothing here re-reads or re-serialises the request text. :func:`read_request` checks it and
says what the client asked for, or raises :class:`HandshakeError` with the status to answer:

* a method other than GET, HTTP/1.0, no ``Upgrade: websocket`` / ``Connection: upgrade``,
  a missing, repeated or malformed ``Sec-WebSocket-Key`` (base64 of 16 bytes) -> 400;
* a ``Sec-WebSocket-Version`` other than 13 (or none) -> 426 with ``Sec-WebSocket-Version:
  13``, as RFC 6455 4.2.2 asks, so the client can retry with a version we speak;
* a ``Sec-WebSocket-Protocol`` value that is not printable ASCII -> 400.

:func:`accept_response` builds the 101 once the app accepts (with what ``ws_messages``
checked of its choices), and :func:`negotiate_deflate`
picks the first permessage-deflate offer we can honour (RFC 7692 5: the server accepts one
offer or none).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

from wsproto.utilities import generate_accept_token

from shardcorn.protocol.ws_extensions import CappedDeflate

VERSION_HEADER = b"sec-websocket-version: 13\r\n"


class HandshakeError(Exception):
    """The upgrade request is refused before the app sees it; ``status`` is the answer."""

    def __init__(self, status: int, reason: str, headers: bytes = b"") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers  # extra header lines for the error response


@dataclass(frozen=True)
class HandshakeRequest:
    """What a valid upgrade request asked for."""

    key: bytes
    subprotocols: list[str]
    extension_offers: list[str]  # each "name; param; param=value", as offered


def _comma_list(values: list[bytes]) -> list[bytes]:
    return [item.strip() for value in values for item in value.split(b",") if item.strip()]


def read_request(
    method: str, http_version: str, headers: Iterable[tuple[bytes, bytes]]
) -> HandshakeRequest:
    """Check an upgrade request (RFC 6455 4.2.1); names in ``headers`` are lower case."""
    if method != "GET":
        raise HandshakeError(400, "a WebSocket handshake must use GET")
    if http_version == "1.0":
        raise HandshakeError(400, "a WebSocket handshake needs HTTP/1.1")
    keys: list[bytes] = []
    versions: list[bytes] = []
    protocols: list[bytes] = []
    extensions: list[bytes] = []
    upgrade: list[bytes] = []
    connection: list[bytes] = []
    for name, value in headers:
        if name == b"sec-websocket-key":
            keys.append(value)
        elif name == b"sec-websocket-version":
            versions.append(value)
        elif name == b"sec-websocket-protocol":
            protocols.append(value)
        elif name == b"sec-websocket-extensions":
            extensions.append(value)
        elif name == b"upgrade":
            upgrade.append(value)
        elif name == b"connection":
            connection.append(value)
    if b"websocket" not in (token.lower() for token in _comma_list(upgrade)):
        raise HandshakeError(400, "missing 'Upgrade: websocket'")
    if b"upgrade" not in (token.lower() for token in _comma_list(connection)):
        raise HandshakeError(400, "missing 'Connection: upgrade'")
    if _comma_list(versions) != [b"13"]:
        raise HandshakeError(
            426, "unsupported WebSocket version: this server speaks 13", VERSION_HEADER
        )
    if len(keys) != 1:
        raise HandshakeError(400, "missing or repeated Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        raise HandshakeError(400, "malformed Sec-WebSocket-Key")
    subprotocols = []
    for item in _comma_list(protocols):
        # Subprotocol names are tokens (RFC 6455 4.1); we insist only on printable ASCII,
        # the part that matters for echoing one back in a header safely.
        if not all(0x21 <= byte <= 0x7E for byte in item):
            raise HandshakeError(400, "invalid Sec-WebSocket-Protocol")
        subprotocols.append(item.decode("ascii"))
    # Extension parameters may be quoted strings with commas (RFC 6455 9.1); permessage-deflate
    # has none, and a misparsed foreign offer is simply not one we recognise.
    offers = [item.decode("latin-1") for item in _comma_list(extensions)]
    return HandshakeRequest(key, subprotocols, offers)


def negotiate_deflate(offers: list[str], max_size: int) -> tuple[CappedDeflate, bytes] | None:
    """Accept the first usable permessage-deflate offer: (extension, response header value)."""
    for offer in offers:
        name, _, params = offer.partition(";")
        if name.strip() != CappedDeflate.name:
            continue
        if not _deflate_params_valid(params):
            continue
        extension = CappedDeflate(max_size)
        try:
            accepted = extension.accept(offer)
        except ValueError:  # e.g. a window size wsproto cannot honour
            continue
        if accepted is None or accepted is False:
            continue
        value = CappedDeflate.name
        if isinstance(accepted, str) and accepted:
            value = f"{value}; {accepted}"
        return extension, value.encode("ascii")
    return None


_DEFLATE_PARAMS = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)


def _deflate_params_valid(params: str) -> bool:
    """RFC 7692 7: decline an offer with an unknown, repeated or ill-formed parameter."""
    seen: set[str] = set()
    for raw in params.split(";"):
        if not raw.strip():
            continue
        name, has_value, value = (part.strip() for part in raw.partition("="))
        if name not in _DEFLATE_PARAMS or name in seen:
            return False
        seen.add(name)
        value = value.strip('"')
        if name.endswith("context_takeover"):
            if has_value:
                return False
        elif name == "server_max_window_bits":
            if not value.isdigit() or not 8 <= int(value) <= 15:
                return False
        elif has_value and (not value.isdigit() or not 8 <= int(value) <= 15):
            return False  # client_max_window_bits may come without a value
    return True


def accept_response(
    key: bytes,
    subprotocol: bytes | None,
    extensions: bytes | None,
    default_headers: bytes,
    headers: list[tuple[bytes, bytes]],
) -> bytes:
    """The 101 Switching Protocols response completing the handshake."""
    parts = [
        b"HTTP/1.1 101 Switching Protocols\r\n",
        b"upgrade: websocket\r\nconnection: Upgrade\r\n",
        b"sec-websocket-accept: %s\r\n" % generate_accept_token(key),
    ]
    if subprotocol is not None:
        parts.append(b"sec-websocket-protocol: %s\r\n" % subprotocol)
    if extensions is not None:
        parts.append(b"sec-websocket-extensions: %s\r\n" % extensions)
    parts.append(default_headers)
    parts.extend(b"%s: %s\r\n" % pair for pair in headers)
    parts.append(b"\r\n")
    return b"".join(parts)
