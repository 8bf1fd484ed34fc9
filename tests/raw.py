"""A raw-socket HTTP client for tests: bytes out, whole responses in, a timeout on every read.

For what httpx will not send (malformed or pipelined bytes, half requests, resets) and for
reading exactly what the server wrote. Responses are parsed by tests.protocol.memory.
"""

from __future__ import annotations

import socket
import time

from tests.protocol.memory import IncompleteResponseError, Response, parse_response

TIMEOUT = 10.0


class RawClient:
    """A blocking client socket with a timeout on every operation."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buffer = b""
        self.eof = False

    @classmethod
    def over(cls, sock: socket.socket, timeout: float = TIMEOUT) -> RawClient:
        """A client on a socket that is already connected."""
        client = cls.__new__(cls)
        sock.settimeout(timeout)
        client.sock, client.timeout, client.buffer, client.eof = sock, timeout, b"", False
        return client

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_some(self) -> bool:
        """Read once into the buffer; False at EOF (or a reset)."""
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def response(self, head: bool = False) -> Response:
        """The next whole response (``head``: it answers a HEAD request)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                response, self.buffer = parse_response(self.buffer, head, eof=self.eof)
                return response
            except IncompleteResponseError:
                if self.eof or time.monotonic() > deadline:
                    raise AssertionError(f"no complete response: {self.buffer[:300]!r}") from None
                self.recv_some()

    def read_until(self, marker: bytes) -> bytes:
        """Everything up to and including ``marker``, taken off the buffer."""
        while marker not in self.buffer:
            if not self.recv_some():
                raise AssertionError(f"connection closed before {marker!r}: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    def closed_by_server(self) -> bool:
        """Read to the end: True once the server has closed (EOF or reset)."""
        while self.recv_some():
            pass
        return self.eof

    def assert_closed(self) -> None:
        """The server closes the connection with nothing more to read."""
        assert self.closed_by_server()
        assert self.buffer == b""

    def close(self) -> None:
        self.sock.close()


def read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    """Read ``sock`` (its own timeout applies) until ``data`` holds ``marker``; return it all."""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed early; got {data[-300:]!r}"
        data += chunk
    return data
