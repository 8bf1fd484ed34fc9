"""Malformed WebSocket input over raw sockets: handshake errors, protocol errors, dead peers.

Every case ends with a fresh connection that still works: no input may stop a shard serving.
"""

from __future__ import annotations

import base64
import random
import socket
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.sync.client import connect

from shardcorn.testing import ThreadServer, serve_in_thread
from tests.protocol.test_websocket import App

TIMEOUT = 15.0  # an upper bound only: generous, so a loaded 2-core CI box never trips it
KEY = base64.b64encode(b"0123456789abcdef")


@contextmanager
def server(**settings: Any) -> Iterator[tuple[ThreadServer, App]]:
    settings.setdefault("lifespan", "off")
    app = App()
    with serve_in_thread(app, **settings) as running:
        yield running, app


def assert_echo_works(running: ThreadServer) -> None:
    with connect(f"ws://127.0.0.1:{running.port}/echo", open_timeout=TIMEOUT) as ws:
        ws.send("still serving")
        assert ws.recv(timeout=TIMEOUT) == "still serving"


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame; ``rsv`` is the RSV bits as they sit in the first byte."""
    mask = random.randbytes(4)
    length = len(payload)
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 1 << 16:
        size = bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + length.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | rsv | opcode]) + size + mask + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


class RawClient:
    """One TCP connection speaking WebSocket by hand."""

    def __init__(self, running: ThreadServer) -> None:
        self.sock = socket.create_connection(("127.0.0.1", running.port), timeout=TIMEOUT)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        self.buffer += data
        return bool(data)

    def request(self, head: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send a request head; return the response's status, headers and what follows it."""
        self.send(head)
        while b"\r\n\r\n" not in self.buffer:
            assert self._more(), f"connection closed before a response head: {self.buffer!r}"
        head_bytes, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head_bytes.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, self.buffer

    def upgrade(self, path: str = "/echo", extra: bytes = b"") -> dict[bytes, bytes]:
        status, headers, _ = self.request(handshake(path, extra))
        assert status == 101
        return headers

    def read_frame(self) -> tuple[int, bytes]:
        """The next server frame as (opcode, payload); server frames are never masked."""
        while True:
            buffer = self.buffer
            if len(buffer) >= 2:
                length = buffer[1] & 0x7F
                start = 2
                if length == 126:
                    length, start = int.from_bytes(buffer[2:4], "big"), 4
                elif length == 127:
                    length, start = int.from_bytes(buffer[2:10], "big"), 10
                if len(buffer) >= start + length:
                    self.buffer = buffer[start + length :]
                    return buffer[0] & 0x0F, buffer[start : start + length]
            assert self._more(), "connection closed before a whole frame"

    def read_close(self) -> int:
        """Skip data and ping frames until the server's Close; return its code."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big") if payload else 1005

    def wait_eof(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self._more():
            assert time.monotonic() < deadline, "the server did not close the connection"


def handshake(path: str = "/echo", extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return (
        method + b" " + path.encode() + b" HTTP/1.1\r\nHost: test\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )


def raw_head(lines: bytes) -> bytes:
    return b"GET /echo HTTP/1.1\r\nHost: test\r\n" + lines + b"\r\n"


UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
KEY_LINE = b"Sec-WebSocket-Key: " + KEY + b"\r\n"


# -- handshake errors ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("head", "status"),
    [
        (raw_head(UPGRADE + KEY_LINE + b"Sec-WebSocket-Version: 8\r\n"), 426),
        (raw_head(UPGRADE + KEY_LINE), 426),
        (raw_head(UPGRADE + b"Sec-WebSocket-Version: 13\r\n"), 400),
        (raw_head(UPGRADE + b"Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n"), 400),
        (handshake(method=b"POST"), 400),
        (handshake(method=b"DELETE"), 400),
        (handshake(extra="Sec-WebSocket-Protocol: chät\r\n".encode()), 400),
        (handshake().replace(b"HTTP/1.1", b"HTTP/1.0"), 400),
    ],
    ids=[
        "version-8",
        "no-version",
        "no-key",
        "bad-key",
        "post",
        "delete",
        "non-ascii-subprotocol",
        "http-1.0",
    ],
)
def test_handshake_errors(head: bytes, status: int) -> None:
    with server() as (running, app):
        client = RawClient(running)
        try:
            got, headers, _ = client.request(head)
            assert got == status
            assert headers[b"connection"] == b"close"
            if status == 426:
                assert headers[b"sec-websocket-version"] == b"13"
            client.wait_eof()
        finally:
            client.close()
        assert app.done.empty()  # the app never saw it
        assert_echo_works(running)


# -- protocol errors after the handshake -----------------------------------------------------
PROTOCOL_ERRORS = {
    "unmasked": (bytes([0x81, 0x02]) + b"hi", 1002),
    "reserved-opcode": (frame(0x3, b"x"), 1002),
    "reserved-control-opcode": (frame(0xB, b"x"), 1002),
    "rsv-bits": (frame(0x1, b"x", rsv=0x20), 1002),
    "rsv1-without-deflate": (frame(0x1, b"x", rsv=0x40), 1002),
    "fragmented-ping": (frame(0x9, b"x", fin=False), 1002),
    "long-ping": (frame(0x9, b"x" * 126), 1002),
    "lone-continuation": (frame(0x0, b"x"), 1002),
    "text-inside-fragmented-message": (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), 1002),
    "close-with-one-byte": (frame(0x8, b"\x03"), 1002),
    "close-code-999": (frame(0x8, close_payload(999)), 1002),
    "close-code-1005": (frame(0x8, close_payload(1005)), 1002),
    "close-code-2000": (frame(0x8, close_payload(2000)), 1002),
    "invalid-utf8": (frame(0x1, b"\xce\xba\xe1\xbd\xb9\xed\xa0\x80"), 1007),
    "invalid-utf8-across-fragments": (frame(0x1, b"ok", fin=False) + frame(0x0, b"\xff"), 1007),
    "invalid-utf8-close-reason": (frame(0x8, close_payload(1000, b"\xff\xfe")), 1007),
    "too-big": (frame(0x2, b"x" * 2000), 1009),
    "too-big-in-fragments": (frame(0x2, b"x" * 600, fin=False) + frame(0x0, b"x" * 600), 1009),
    "too-big-header-only": (bytes([0x82, 0xFF]) + (1 << 62).to_bytes(8, "big") + b"mask", 1009),
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_ERRORS))
def test_protocol_errors_close_with_the_right_code(name: str) -> None:
    data, code = PROTOCOL_ERRORS[name]
    with server(ws_max_size=1000) as (running, app):
        client = RawClient(running)
        try:
            client.upgrade()
            client.send(data)
            assert client.read_close() == code
            client.wait_eof()
        finally:
            client.close()
        assert app.finished()[1]["code"] == code
        assert_echo_works(running)


@pytest.mark.parametrize("bad", ["rsv-bits", "invalid-utf8", "too-big"])
def test_messages_before_a_bad_frame_are_answered_first(bad: str) -> None:
    data, code = PROTOCOL_ERRORS[bad]
    with server(ws_max_size=1000) as (running, app):
        client = RawClient(running)
        try:
            client.upgrade()
            client.send(frame(0x1, b"first") + frame(0x2, b"second") + data + frame(0x9))
            assert client.read_frame() == (0x1, b"first")
            assert client.read_frame() == (0x2, b"second")
            assert client.read_close() == code
            client.wait_eof()
        finally:
            client.close()
        assert app.finished()[1]["code"] == code


def test_deflate_bomb_is_1009() -> None:
    with server(ws_max_size=1 << 20) as (running, app):
        client = RawClient(running)
        try:
            headers = client.upgrade(extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
            assert headers[b"sec-websocket-extensions"] == b"permessage-deflate"
            compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
            bomb = compressor.compress(b"\0" * (256 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
            client.send(frame(0x2, bomb[:-4], rsv=0x40))
            assert client.read_close() == 1009
        finally:
            client.close()
        assert app.finished()[1]["code"] == 1009
        assert_echo_works(running)


def test_client_close_is_echoed_and_the_server_closes_tcp() -> None:
    with server() as (running, app):
        client = RawClient(running)
        try:
            client.upgrade()
            client.send(frame(0x8, close_payload(4321, b"see you")))
            opcode, payload = client.read_frame()
            assert (opcode, payload) == (0x8, close_payload(4321, b"see you"))
            client.wait_eof()
        finally:
            client.close()
        assert app.finished()[1] == {
            "type": "websocket.disconnect",
            "code": 4321,
            "reason": "see you",
        }


def test_empty_close_is_1005_for_the_app() -> None:
    with server() as (running, app):
        client = RawClient(running)
        try:
            client.upgrade()
            client.send(frame(0x8))
            assert client.read_frame() == (0x8, b"")
        finally:
            client.close()
        assert app.finished()[1]["code"] == 1005


def test_frames_sent_with_the_handshake_wait_for_the_accept() -> None:
    with server() as (running, _):
        client = RawClient(running)
        try:
            # One write: the handshake, then two frames the client did not wait to send.
            status, _, _ = client.request(
                handshake() + frame(0x1, b"early", fin=False) + frame(0x0, b" bird")
            )
            assert status == 101
            assert client.read_frame() == (0x1, b"early bird")
            client.send(frame(0x9, b"ping!"))
            assert client.read_frame() == (0xA, b"ping!")
        finally:
            client.close()


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_never_hurt_the_server(seed: int) -> None:
    rng = random.Random(seed)
    with server(ws_max_size=4096) as (running, _):
        for _ in range(5):
            client = RawClient(running)
            try:
                client.upgrade()
                junk = rng.randbytes(rng.randrange(1, 3000))
                if rng.random() < 0.5:
                    junk = frame(rng.randrange(16), junk[:200], fin=rng.random() < 0.8) + junk
                client.send(junk)
                client.sock.shutdown(socket.SHUT_WR)
                client.wait_eof()
            except (ConnectionResetError, BrokenPipeError):
                pass
            finally:
                client.close()
        assert_echo_works(running)


# -- keepalive and dead peers ----------------------------------------------------------------
def test_pings_answered_keep_the_connection() -> None:
    with server(ws_ping_interval=0.05, ws_ping_timeout=1.0) as (running, _):
        client = RawClient(running)
        try:
            client.upgrade()
            for _ in range(3):
                opcode, payload = client.read_frame()
                assert opcode == 0x9
                client.send(frame(0xA, payload))
            client.send(frame(0x1, b"alive"))
            while (frame_read := client.read_frame())[0] == 0x9:
                client.send(frame(0xA, frame_read[1]))
            assert frame_read == (0x1, b"alive")
        finally:
            client.close()


def test_dead_peer_is_dropped_after_the_ping_timeout() -> None:
    with server(ws_ping_interval=0.05, ws_ping_timeout=0.2) as (running, app):
        client = RawClient(running)
        try:
            client.upgrade()
            assert client.read_frame()[0] == 0x9  # pinged, and we never answer
            client.wait_eof()
        finally:
            client.close()
        assert app.finished()[1]["code"] == 1006
        assert_echo_works(running)


def test_shutdown_deadline_drops_a_peer_that_ignores_our_close() -> None:
    with server(timeout_graceful_shutdown=0.3) as (running, _):
        client = RawClient(running)
        try:
            client.upgrade()
            started = time.monotonic()
            running.call(running.shard.stop)
            assert client.read_close() == 1001  # and we never answer it
            client.wait_eof()
            assert time.monotonic() - started < 3.0  # the deadline, not the close timeout
        finally:
            client.close()
