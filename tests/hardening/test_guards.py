"""The hardening parts on their own: the chunk framing budget, the Host check, the EMFILE
watch, the lingering close, and the unsent-bytes measure of --timeout-write."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import Any

import pytest

from shardcorn.protocol import linger
from shardcorn.protocol.errors import ProtocolError
from shardcorn.protocol.http_validation import (
    CHUNK_FRAMING_EXCESS,
    ChunkFraming,
    check_trailer,
    host_is_valid,
)
from shardcorn.protocol.write_progress import unsent_bytes
from shardcorn.shards.accept import ASYNCIO_ACCEPT_FAILED, DescriptorWatch
from tests.hardening.wire import FOLLOW, BodyReader
from tests.protocol.memory import MemoryTransport, connect

HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


# -- ChunkFraming ------------------------------------------------------------------------------
def follow(reads: list[bytes]) -> int:
    """Feed a chunked request (head first) read by read; the last scan result."""
    framing = ChunkFraming(None, 0, b"")
    result = framing.scan(reads[0], framing.start(reads[0]))
    for data in reads[1:]:
        if result != -1:
            break
        result = framing.scan(data)
    return result


def test_one_byte_chunks_stay_within_the_budget() -> None:
    body = b"1\r\nx\r\n" * 20_000 + b"0\r\n\r\n"
    assert follow([HEAD + body]) == len(HEAD + body)


def test_an_extension_over_the_budget_is_caught_in_one_read_or_many() -> None:
    data = HEAD + b"1;e=" + b"x" * (CHUNK_FRAMING_EXCESS + 100) + b"\r\nx\r\n0\r\n\r\n"
    assert follow([data]) == -2
    assert follow([data[i : i + 1000] for i in range(0, len(data), 1000)]) == -2


def test_an_endless_extension_is_caught_before_its_line_ends() -> None:
    reads = [HEAD + b"1;e="] + [b"x" * 4096] * 10
    assert follow(reads) == -2


def test_trailers_count_as_framing() -> None:
    trailers = b"X-T: " + b"t" * 1000 + b"\r\n"
    data = HEAD + b"1\r\nx\r\n0\r\n" + trailers * 20 + b"\r\n"
    assert follow([data]) == -2


def test_the_end_of_the_body_is_found_with_what_follows() -> None:
    body = b"3;a=b\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
    assert follow([HEAD + body + FOLLOW]) == len(HEAD + body)


def test_what_llhttp_refuses_is_not_followed() -> None:
    framing = ChunkFraming(None, 0, b"")
    assert framing.scan(HEAD + b"0x1\r\na\r\n", framing.start(HEAD)) == -1
    assert framing.lost and framing.counting


def test_a_head_split_across_reads_is_found() -> None:
    for cut in range(1, len(HEAD)):
        framing = ChunkFraming(None, 0, HEAD[:cut][-3:])
        rest = HEAD[cut:] + b"1\r\nx\r\n0\r\n\r\n"
        assert framing.scan(rest, framing.start(rest)) == len(rest), cut


def test_an_unknown_head_position_falls_back_to_counting() -> None:
    framing = ChunkFraming(None, 0, None)
    assert framing.start(HEAD) == -1 and framing.counting
    framing.mark(0, 0)
    assert not framing.count(b"x" * 1000, 0, 0)  # the read it started in is not counted
    assert framing.count(b"x" * (CHUNK_FRAMING_EXCESS + 1), 0, 0)


# -- small checks --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (b"example.com", True),
        (b"example.com:8000", True),
        (b"[2001:db8::1]:443", True),
        (b"xn--bcher-kva.example", True),
        (b"a b", False),
        (b"a/b", False),
        (b"user@a", False),
        (b"a\xff", False),
        (b"a\tb", False),
        (b'a"b', False),
    ],
)
def test_host_values(value: bytes, valid: bool) -> None:
    assert host_is_valid(value) is valid


@pytest.mark.parametrize("name", [b"content-length", b"transfer-encoding", b"connection", b"host"])
def test_reframing_trailers_are_refused(name: bytes) -> None:
    with pytest.raises(ProtocolError) as refused:
        check_trailer(name)
    assert refused.value.status == 400
    check_trailer(b"x-checksum")


def test_unsent_bytes_sees_the_kernel_queue(loop: asyncio.AbstractEventLoop) -> None:
    left, right = socket.socketpair()
    try:

        async def fill() -> int:
            transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, left)
            transport.write(b"x" * 100_000)  # the peer reads nothing
            await asyncio.sleep(0)
            queued = unsent_bytes(transport)
            transport.close()
            return queued

        assert loop.run_until_complete(fill()) >= 100_000
    finally:
        right.close()


# -- DescriptorWatch ---------------------------------------------------------------------------
def emfile_context() -> dict[str, Any]:
    return {"message": ASYNCIO_ACCEPT_FAILED, "exception": OSError(errno.EMFILE, "Too many")}


def test_asyncio_accept_reports_become_one_line_per_interval(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    passed: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: passed.append(context))
    watch = DescriptorWatch(loop, 0, lambda: 7, 3, probe_interval=3600, log_interval=3600)
    watch.start()
    try:
        handler = loop.get_exception_handler()
        assert handler is not None
        for _ in range(2048):  # what asyncio reports per retry with --backlog 2048
            handler(loop, emfile_context())
        handler(loop, {"message": "something else"})
    finally:
        watch.stop()
    warnings = [r for r in logs.records if "cannot accept connections" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "Shard 3" in message and "7 connections open" in message
    assert passed == [{"message": "something else"}]  # other reports go where they went
    assert loop.get_exception_handler() is not handler  # stop() put the old one back


def test_the_probe_sees_exhaustion_and_recovery(
    loop: asyncio.AbstractEventLoop,
    logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    left, right = socket.socketpair()
    watch = DescriptorWatch(loop, left.fileno(), lambda: 0, probe_interval=0.01, log_interval=60)
    real_dup = os.dup
    exhausted = True

    def dup(fd: int) -> int:
        if exhausted:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_dup(fd)

    monkeypatch.setattr(os, "dup", dup)
    watch.start()
    try:

        async def until(condition: Any) -> None:
            while not condition():
                await asyncio.sleep(0.005)

        loop.run_until_complete(asyncio.wait_for(until(lambda: watch.warnings >= 1), 5))
        exhausted = False
        loop.run_until_complete(asyncio.wait_for(until(lambda: watch.exhausted_since is None), 5))
    finally:
        watch.stop()
        left.close()
        right.close()
    messages = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
    assert len([m for m in messages if "cannot accept" in m]) == 1
    assert any("available again" in m for m in messages)


# -- lingering close ---------------------------------------------------------------------------
class HalfClosing(MemoryTransport):
    """A memory transport that can half-close, as a TCP socket can."""

    eof_written = False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True


def test_after_an_error_the_rest_is_read_and_dropped(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linger, "LINGER_BYTES", 1000)
    app = BodyReader()
    client = connect(loop, app, limit_request_body=10)
    transport = HalfClosing(loop, client.protocol)
    client.transport = transport
    client.protocol.connection_made(transport)
    client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n\r\n" + b"x" * 100)
    response = client.read_response()
    assert response.status == 413 and transport.eof_written and not transport.closing
    client.send(b"x" * 400 + FOLLOW)  # still read, never parsed
    assert not transport.closing and app.calls == []
    client.send(b"y" * 1000)  # past LINGER_BYTES: closed
    client.wait_closed()
    assert app.calls == []
    assert client.unread() == b""


def test_lingering_ends_after_its_time(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linger, "LINGER_SECONDS", 0.05)
    client = connect(loop, BodyReader())
    transport = HalfClosing(loop, client.protocol)
    client.transport = transport
    client.protocol.connection_made(transport)
    client.send(b"GARBAGE\r\n\r\n")
    assert client.read_response().status == 400
    assert not transport.closing
    client.wait_closed(timeout=5)
