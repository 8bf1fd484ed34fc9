"""The WebSocket handshake and the size-capping extensions, sans-IO: headers and bytes in,
decisions and bytes out (``ws_handshake``, ``ws_extensions``)."""

from __future__ import annotations

import base64
import zlib

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import generate_accept_token

from shardcorn.protocol.response import AppProtocolError
from shardcorn.protocol.ws_extensions import MessageSizeGuard
from shardcorn.protocol.ws_handshake import (
    HandshakeError,
    accept_response,
    negotiate_deflate,
    read_request,
)
from shardcorn.protocol.ws_messages import check_headers, check_subprotocol

KEY = base64.b64encode(b"0123456789abcdef")


def headers(**overrides: bytes | None) -> list[tuple[bytes, bytes]]:
    base: dict[str, bytes | None] = {
        "host": b"example.com",
        "upgrade": b"websocket",
        "connection": b"Upgrade",
        "sec-websocket-key": KEY,
        "sec-websocket-version": b"13",
    }
    base.update({name.replace("_", "-"): value for name, value in overrides.items()})
    return [(name.encode(), value) for name, value in base.items() if value is not None]


def refused(method: str = "GET", version: str = "1.1", **overrides: bytes | None) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        read_request(method, version, headers(**overrides))
    return info.value


# -- read_request ----------------------------------------------------------------------------
def test_valid_request() -> None:
    request = read_request(
        "GET",
        "1.1",
        headers(
            connection=b"keep-alive, Upgrade",
            upgrade=b"WebSocket",
            sec_websocket_protocol=b"chat, superchat ,",
            sec_websocket_extensions=b"permessage-deflate; client_max_window_bits, x-foo",
        ),
    )
    assert request.key == KEY
    assert request.subprotocols == ["chat", "superchat"]
    assert request.extension_offers == ["permessage-deflate; client_max_window_bits", "x-foo"]


@pytest.mark.parametrize("version", [None, b"8", b"12", b"13, 8", b"abc"])
def test_version_other_than_13_is_426(version: bytes | None) -> None:
    error = refused(sec_websocket_version=version)
    assert error.status == 426
    assert error.headers == b"sec-websocket-version: 13\r\n"


@pytest.mark.parametrize(
    "key",
    [
        None,
        b"",
        b"not base64!",
        base64.b64encode(b"short"),
        base64.b64encode(b"0123456789abcdefg"),  # 17 bytes
        KEY + b"==",
    ],
)
def test_missing_or_malformed_key_is_400(key: bytes | None) -> None:
    assert refused(sec_websocket_key=key).status == 400


def test_repeated_key_is_400() -> None:
    with pytest.raises(HandshakeError) as info:
        read_request("GET", "1.1", [*headers(), (b"sec-websocket-key", KEY)])
    assert info.value.status == 400


@pytest.mark.parametrize("method", ["POST", "HEAD", "PUT", "CONNECT"])
def test_method_other_than_get_is_400(method: str) -> None:
    assert refused(method=method).status == 400


def test_http_10_is_400() -> None:
    assert refused(version="1.0").status == 400


@pytest.mark.parametrize(
    "value", ["caf\u00e9".encode(), b"chat, \xff\xfe", b"a\x01b", b"chat room"]
)
def test_non_ascii_subprotocol_is_400(value: bytes) -> None:
    assert refused(sec_websocket_protocol=value).status == 400


def test_missing_upgrade_tokens_are_400() -> None:
    assert refused(upgrade=b"h2c").status == 400
    assert refused(connection=b"keep-alive").status == 400


# -- the 101 response and the app's choices --------------------------------------------------
def test_accept_response() -> None:
    data = accept_response(
        KEY, b"chat", b"permessage-deflate", b"server: shardcorn\r\n", [(b"x-a", b"1")]
    )
    assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert data.endswith(b"\r\n\r\n")
    lines = data[:-4].split(b"\r\n")[1:]
    assert lines == [
        b"upgrade: websocket",
        b"connection: Upgrade",
        b"sec-websocket-accept: " + generate_accept_token(KEY),
        b"sec-websocket-protocol: chat",
        b"sec-websocket-extensions: permessage-deflate",
        b"server: shardcorn",
        b"x-a: 1",
    ]


def test_rfc_6455_sample_accept_token() -> None:
    # RFC 6455 1.3's worked example.
    data = accept_response(b"dGhlIHNhbXBsZSBub25jZQ==", None, None, b"", [])
    assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in data


def test_check_subprotocol() -> None:
    assert check_subprotocol(None, []) is None
    assert check_subprotocol("chat", ["chat"]) == b"chat"
    with pytest.raises(AppProtocolError):
        check_subprotocol("other", ["chat"])
    with pytest.raises(AppProtocolError):
        check_subprotocol(b"chat", ["chat"])


@pytest.mark.parametrize(
    "bad",
    [
        [(b"x-a", b"1\r\nx-b: 2")],
        [(b"bad name", b"1")],
        [("x-a", "1")],
        [(b"x-a",)],
        [(b"connection", b"close")],
        [(b"sec-websocket-accept", b"forged")],
        5,
    ],
)
def test_check_headers_refuses(bad: object) -> None:
    with pytest.raises(AppProtocolError):
        check_headers(bad)


def test_check_headers_accepts() -> None:
    assert check_headers(None) == []
    assert check_headers([[b"x-a", bytearray(b"1")]]) == [(b"x-a", b"1")]


# -- permessage-deflate negotiation ----------------------------------------------------------
@pytest.mark.parametrize(
    ("offers", "expected"),
    [
        (["permessage-deflate"], b"permessage-deflate"),
        (
            ["permessage-deflate; client_max_window_bits"],
            b"permessage-deflate; client_max_window_bits=15",
        ),
        (
            ["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
            b"permessage-deflate; client_no_context_takeover; server_no_context_takeover",
        ),
        (
            ["permessage-deflate; server_max_window_bits=10"],
            b"permessage-deflate; server_max_window_bits=10",
        ),
        # The first acceptable offer wins; unusable ones are skipped (RFC 7692 5).
        (
            ["permessage-deflate; server_max_window_bits=8", "permessage-deflate"],
            b"permessage-deflate",
        ),
        (["permessage-deflate; unknown_param", "x-other"], None),
        (["permessage-deflate; server_max_window_bits=abc"], None),
        (["permessage-deflate; server_max_window_bits"], None),
        (["permessage-deflate; server_no_context_takeover=1"], None),
        (["permessage-deflate; client_no_context_takeover; client_no_context_takeover"], None),
        (["x-webkit-deflate-frame"], None),
        ([], None),
    ],
)
def test_negotiate_deflate(offers: list[str], expected: bytes | None) -> None:
    result = negotiate_deflate(offers, 1024)
    if expected is None:
        assert result is None
    else:
        assert result is not None
        extension, header = result
        assert header == expected
        assert extension.enabled()


# -- the size limits, with wsproto as the client ---------------------------------------------
def server_and_client(max_size: int, deflate: bool) -> tuple[Connection, Connection]:
    extensions: list[object] = []
    client_extensions = []
    if deflate:
        result = negotiate_deflate(["permessage-deflate"], max_size)
        assert result is not None
        extensions.append(result[0])
        client_deflate = PerMessageDeflate()
        client_deflate.finalize("permessage-deflate")
        client_extensions.append(client_deflate)
    extensions.append(MessageSizeGuard(max_size))
    server = Connection(ConnectionType.SERVER, extensions)  # type: ignore[arg-type]
    client = Connection(ConnectionType.CLIENT, client_extensions)
    return server, client


def feed(server: Connection, data: bytes, byte_by_byte: bool) -> list[Event]:
    events: list[Event] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
    for chunk in chunks:
        server.receive_data(chunk)
        events.extend(server.events())
    return events


def masked_header(first_byte: int, length: int) -> bytes:
    """A client frame header with an all-zero mask (so the payload goes as is)."""
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 1 << 16:
        size = bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + length.to_bytes(8, "big")
    return bytes([first_byte]) + size + b"\0\0\0\0"


def joined(events: list[Event]) -> bytes | str:
    parts = [e.data for e in events if isinstance(e, (TextMessage, BytesMessage))]
    return "".join(parts) if parts and isinstance(parts[0], str) else b"".join(parts)


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_message_at_the_limit_passes(deflate: bool, byte_by_byte: bool) -> None:
    server, client = server_and_client(1000, deflate)
    data = client.send(TextMessage(data="é" * 500))  # 1000 bytes of UTF-8
    events = feed(server, data, byte_by_byte)
    assert joined(events) == "é" * 500
    assert not any(isinstance(e, CloseConnection) for e in events)


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_message_over_the_limit_is_1009(deflate: bool, byte_by_byte: bool) -> None:
    server, client = server_and_client(1000, deflate)
    data = client.send(BytesMessage(data=b"a" * 1001))
    events = feed(server, data, byte_by_byte)
    closes = [e for e in events if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [CloseReason.MESSAGE_TOO_BIG]


@pytest.mark.parametrize("deflate", [False, True])
def test_fragments_count_towards_one_message(deflate: bool) -> None:
    server, client = server_and_client(1000, deflate)
    data = b"".join(
        client.send(BytesMessage(data=b"b" * 400, message_finished=last))
        for last in (False, False, True)
    )
    closes = [e for e in feed(server, data, False) if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [CloseReason.MESSAGE_TOO_BIG]
    # The count starts again with each message.
    server, client = server_and_client(1000, deflate)
    data = b"".join(client.send(BytesMessage(data=b"c" * 900)) for _ in range(3))
    events = feed(server, data, False)
    assert joined(events) == b"c" * 2700
    assert not any(isinstance(e, CloseConnection) for e in events)


def test_uncompressed_frame_refused_from_its_header() -> None:
    server, _ = server_and_client(1000, False)
    # A masked binary frame header announcing 2**40 bytes, and no payload at all.
    header = bytes([0x82, 0xFF]) + (2**40).to_bytes(8, "big") + b"mask"
    closes = [e for e in feed(server, header, False) if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [CloseReason.MESSAGE_TOO_BIG]


def test_deflate_bomb_is_capped() -> None:
    # 64 MiB of zeros deflate to ~64 KiB; the inflater must stop at the limit, not expand it.
    limit = 1 << 20
    server, _ = server_and_client(limit, True)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(b"\0" * (64 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    payload = bomb[:-4]
    frame = masked_header(0xC2, len(payload)) + payload
    events = feed(server, frame, False)
    closes = [e for e in events if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [CloseReason.MESSAGE_TOO_BIG]
    assert sum(len(e.data) for e in events if isinstance(e, BytesMessage)) <= limit


def test_ping_inside_a_compressed_fragmented_message() -> None:
    # wsproto's own PerMessageDeflate forgets the message is compressed after a control frame.
    server, client = server_and_client(1 << 20, True)
    data = client.send(TextMessage(data="hello " * 50, message_finished=False))
    data += client.send(Ping(b"p"))
    data += client.send(TextMessage(data="world " * 50, message_finished=True))
    events = feed(server, data, False)
    assert joined(events) == "hello " * 50 + "world " * 50
    assert any(isinstance(e, Ping) for e in events)


def test_compressed_control_frame_is_1002() -> None:
    server, _ = server_and_client(1000, True)
    frame = bytes([0xC9, 0x80]) + b"\0\0\0\0"  # a ping with RSV1 set
    closes = [e for e in feed(server, frame, False) if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [CloseReason.PROTOCOL_ERROR]


def test_corrupt_deflate_data_is_1007() -> None:
    server, _ = server_and_client(1000, True)
    payload = b"\xff\xff\xff\xff"
    frame = masked_header(0xC2, len(payload)) + payload
    closes = [e for e in feed(server, frame, False) if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [CloseReason.INVALID_FRAME_PAYLOAD_DATA]


def test_no_context_takeover_resets_the_inflater() -> None:
    result = negotiate_deflate(["permessage-deflate; client_no_context_takeover"], 1 << 20)
    assert result is not None
    server = Connection(ConnectionType.SERVER, [result[0], MessageSizeGuard(1 << 20)])
    client_deflate = PerMessageDeflate()
    client_deflate.finalize("permessage-deflate; client_no_context_takeover")
    client = Connection(ConnectionType.CLIENT, [client_deflate])
    for text in ("one " * 20, "one " * 20, "two " * 20):
        events = feed(server, client.send(TextMessage(data=text)), False)
        assert joined(events) == text
