"""The rest of a large Content-Length body is read by the app's receive() (HttpProtocol.pull_body).

What must hold: every byte reaches the app in order, a read never takes bytes of the request
behind the body, a body already waiting in the socket reaches the app in one message, a
client that resets mid-body is a disconnect, and TLS bodies (not readable off the socket)
arrive whole the usual way.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
import threading
from pathlib import Path

import pytest

from shardcorn.loading import Receive, Scope, Send
from shardcorn.protocol.http import PASS_BODY_MIN, PULL_MAX
from shardcorn.testing import serve_in_thread
from tests.protocol.memory import connect

TIMEOUT = 10.0


async def digest(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with the body's length, SHA-256 and the number of messages it came in."""
    assert scope["type"] == "http"
    hasher = hashlib.sha256()
    size = messages = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        hasher.update(message["body"])
        size += len(message["body"])
        messages += 1
        more = message["more_body"]
    body = b"%d %s %d" % (size, hasher.hexdigest().encode(), messages)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def post(path: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)


def read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """The bodies of ``count`` responses with a content-length."""
    data = b""
    bodies: list[bytes] = []
    while len(bodies) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) >= length:
                assert head.startswith(b"HTTP/1.1 200 ")
                bodies.append(rest[:length])
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(bodies)} responses"
        data += chunk
    return bodies


def expected(body: bytes) -> bytes:
    return b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


@pytest.mark.parametrize("size", [PASS_BODY_MIN + 1, 1024 * 1024 + 17, 3 * PULL_MAX + 5])
def test_large_bodies_and_the_request_behind_them_arrive_whole(loop_name: str, size: int) -> None:
    body = os.urandom(size)
    stream = post(b"/a", body) + post(b"/b", b"small") + post(b"/c", body[::-1])
    with (
        serve_in_thread(digest, loop=loop_name, lifespan="off") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock,
    ):
        sender = threading.Thread(target=sock.sendall, args=(stream,), daemon=True)
        sender.start()
        answers = read_responses(sock, 3)
        sender.join(TIMEOUT)
    assert [a.rpartition(b" ")[0] for a in answers] == [
        expected(body),
        expected(b"small"),
        expected(body[::-1]),
    ]


def test_a_body_waiting_in_the_socket_reaches_the_app_in_one_message(
    loop_name: str, tmp_path: Path
) -> None:
    """The app takes the first piece, the rest (more than one loop read) is sent meanwhile:
    its next receive() gets all of it at once."""
    rest_size = 600_000  # above the loops' 256 KiB reads, below PULL_MAX
    body = os.urandom(1000 + rest_size)
    request = post(b"/", body)
    first_taken = threading.Event()
    rest_sent = threading.Event()
    sizes: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        chunks = [(await receive())["body"]]
        sizes.append(len(chunks[0]))
        first_taken.set()
        # Blocks the loop on purpose, so that the loop cannot read the rest before we ask.
        rest_sent.wait(TIMEOUT)
        more = True
        while more:
            message = await receive()
            chunks.append(message["body"])
            sizes.append(len(message["body"]))
            more = message["more_body"]
        joined = b"".join(chunks)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": expected(joined)})

    path = str(tmp_path / "s.sock")
    with (
        serve_in_thread(app, uds=path, loop=loop_name, lifespan="off"),
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
    ):
        sock.settimeout(TIMEOUT)
        # Room for the whole rest in the socket while the server is not reading.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * rest_size)
        sock.connect(path)
        sock.sendall(request[: len(request) - rest_size])
        assert first_taken.wait(TIMEOUT)
        sock.sendall(request[len(request) - rest_size :])
        rest_sent.set()
        assert read_responses(sock, 1) == [expected(body)]
    assert sizes == [1000, rest_size], sizes


def test_a_reset_in_the_middle_of_a_body_is_a_disconnect(loop_name: str) -> None:
    seen: list[str] = []
    done = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect" or not message["more_body"]:
                    seen.append(message["type"] + (" complete" if "body" in message else ""))
                    return
        finally:
            done.set()

    with (
        serve_in_thread(app, loop=loop_name, lifespan="off") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(post(b"/", b"x" * (4 * PULL_MAX))[: 3 * PASS_BODY_MIN])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
        assert done.wait(TIMEOUT)
        assert seen == ["http.disconnect"]


def test_the_server_keeps_serving_other_connections_after_a_reset_mid_body() -> None:
    with serve_in_thread(digest, lifespan="off") as server:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
                sock.sendall(post(b"/", b"y" * (2 * PULL_MAX))[: 2 * PASS_BODY_MIN])
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        body = os.urandom(2 * PULL_MAX)
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sender = threading.Thread(target=sock.sendall, args=(post(b"/", body),), daemon=True)
            sender.start()
            [answer] = read_responses(sock, 1)
            sender.join(TIMEOUT)
        assert answer.rpartition(b" ")[0] == expected(body)


def test_no_direct_reads_without_a_plain_socket(loop: asyncio.AbstractEventLoop) -> None:
    """An in-memory transport (as TLS: no socket to read the body from) never pulls."""
    client = connect(loop, digest)
    assert client.protocol.pull_fd == -1
    body = os.urandom(3 * PASS_BODY_MIN)
    request = post(b"/", body)
    for start in range(0, len(request), 50_000):
        client.send(request[start : start + 50_000])
    response = client.read_response()
    assert response.body.rpartition(b" ")[0] == expected(body)
    client.close()
