"""A fixed-count HTTP/1.1 load generator, for measurements that need an exact request count.

wrk runs for a time, not for a number of requests; instruction counts (``bench/instructions.py``)
and syscall counts need "exactly N requests", so this sends them: ``connections`` keep-alive
connections, one request in flight on each (no pipelining, the same shape as wrk's), until
``total`` responses have been read in full. Responses are framed by their ``content-length``,
which every benchmark app sends.

It is plain Python with ``selectors``: far slower than wrk, but the servers it drives here run
under valgrind, 30-100 times slower than native, so it is never the bottleneck there.
"""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import dataclass, field

_RECV_SIZE = 256 * 1024
# Under valgrind a server can pause for seconds (a dump, a collection); minutes means stuck.
_STALL_S = 120.0


class LoadError(Exception):
    """A response was malformed, not a 2xx, or the server closed a connection early."""


def request_bytes(host: str, port: int, post_size: int | None) -> bytes:
    """The request every connection sends, over and over: a GET, or a POST of ``post_size``."""
    if post_size is None:
        return f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode("ascii")
    head = (
        f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {post_size}\r\n\r\n"
    )
    return head.encode("ascii") + b"x" * post_size


@dataclass
class _Conn:
    sock: socket.socket
    out: memoryview = field(default_factory=lambda: memoryview(b""))
    buffer: bytearray = field(default_factory=bytearray)
    expected: int = -1  # bytes of the whole response (head + body) once the head is read


def _response_length(buffer: bytearray) -> int:
    """Head + body length of the response starting ``buffer``, or -1 if its head is not in."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return -1
    head = bytes(buffer[:end]).lower()
    status = head[9:12]
    if not head.startswith(b"http/1.1 ") or status[:1] != b"2":
        raise LoadError(f"unexpected response: {bytes(buffer[:80])!r}")
    marker = head.find(b"\r\ncontent-length:")
    if marker < 0:
        raise LoadError("a response without content-length")
    line_end = head.find(b"\r\n", marker + 2)
    value = head[marker + 17 : line_end if line_end >= 0 else len(head)]
    return end + 4 + int(value.strip())


def run_load(
    host: str, port: int, total: int, connections: int, post_size: int | None = None
) -> float:
    """Send ``total`` requests over ``connections`` connections; return the seconds it took."""
    request = request_bytes(host, port, post_size)
    selector = selectors.DefaultSelector()
    conns: list[_Conn] = []
    sent = done = 0
    started = time.monotonic()
    try:
        for _ in range(min(connections, total)):
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conn = _Conn(sock, memoryview(request))
            sent += 1
            conns.append(conn)
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        while done < total:
            ready = selector.select(timeout=_STALL_S)
            if not ready:
                raise LoadError(f"no response for {_STALL_S:.0f} s ({done}/{total} done)")
            for key, events in ready:
                conn = key.data
                if events & selectors.EVENT_WRITE and conn.out:
                    written = conn.sock.send(conn.out)
                    conn.out = conn.out[written:]
                    if not conn.out:
                        selector.modify(conn.sock, selectors.EVENT_READ, conn)
                if not events & selectors.EVENT_READ:
                    continue
                data = conn.sock.recv(_RECV_SIZE)
                if not data:
                    raise LoadError("the server closed a keep-alive connection")
                conn.buffer += data
                if conn.expected < 0:
                    conn.expected = _response_length(conn.buffer)
                if conn.expected < 0 or len(conn.buffer) < conn.expected:
                    continue
                if len(conn.buffer) > conn.expected:
                    raise LoadError("bytes after the response to an unpipelined request")
                done += 1
                conn.buffer.clear()
                conn.expected = -1
                if sent < total:
                    sent += 1
                    conn.out = memoryview(request)
                    selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
    finally:
        for conn in conns:
            selector.unregister(conn.sock)
            conn.sock.close()
        selector.close()
    return time.monotonic() - started
