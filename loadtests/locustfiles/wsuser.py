"""A Locust ``User`` that speaks WebSocket through ``websockets.sync.client``.

Locust ships no WebSocket client, so this user times each exchange itself and fires Locust's
``request`` event with ``request_type="WS"``: handshakes and echoes then show in Locust's
statistics next to the HTTP rows, and the runner can tell them apart by type.

The sync client blocks on sockets and runs a background reader thread; Locust has already
monkey-patched ``socket`` and ``threading`` with gevent, so both become cooperative and one
Locust process can hold many of these users.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

from locust import User
from locust.env import Environment
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from loadtests.contract import WS_CONNECT_NAME, WS_REQUEST_TYPE

# What a failed exchange can raise: the socket (OSError), the protocol (WebSocketException,
# which includes ConnectionClosed) or a timeout (TimeoutError).
_EXCHANGE_ERRORS = (OSError, WebSocketException, TimeoutError)


class EchoMismatchError(Exception):
    """The server answered an echo with something other than what was sent."""


def websocket_url(host: str, path: str) -> str:
    """``http://h:p`` -> ``ws://h:p/path`` (and ``https`` -> ``wss``)."""
    parts = urlsplit(host)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class WebSocketUser(User):
    """Holds one WebSocket connection for its whole life; reconnects after a failure."""

    abstract = True
    path = "/ws"
    open_timeout = 10.0
    reply_timeout = 10.0
    close_timeout = 2.0
    # No permessage-deflate: the load test measures the server's framing, not zlib.
    compression: str | None = None
    # After a failed handshake, wait this long before the next one, so that a server without
    # the route gets a trickle of attempts and not a busy loop of them.
    reconnect_pause = 0.5

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._connection: ClientConnection | None = None

    def on_start(self) -> None:
        self.connect()

    def on_stop(self) -> None:
        self.disconnect()

    def connect(self) -> ClientConnection | None:
        """Open the connection, firing one ``WS`` event named ``/ws connect`` for the handshake."""
        url = websocket_url(self.host or "", self.path)
        started = time.perf_counter()
        error: Exception | None = None
        try:
            self._connection = connect(
                url,
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                compression=self.compression,
            )
        except _EXCHANGE_ERRORS as exc:
            error = exc
        self._fire(WS_CONNECT_NAME, started, 0, error)
        if error is not None:
            time.sleep(self.reconnect_pause)
        return self._connection

    def disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def echo(self, message: str | bytes, name: str) -> None:
        """Send one message and wait for it to come back unchanged; one ``WS`` event."""
        connection = self._connection or self.connect()
        if connection is None:
            return  # the failed handshake has been reported already
        started = time.perf_counter()
        error: Exception | None = None
        length = 0
        try:
            connection.send(message)
            reply = connection.recv(timeout=self.reply_timeout)
            length = len(reply)
            if reply != message:
                error = EchoMismatchError(f"sent {len(message)} units, got {length} different")
        except _EXCHANGE_ERRORS as exc:
            error = exc
            self.disconnect()
        self._fire(name, started, length, error)

    def _fire(self, name: str, started: float, length: int, error: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type=WS_REQUEST_TYPE,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context=self.context(),
        )
