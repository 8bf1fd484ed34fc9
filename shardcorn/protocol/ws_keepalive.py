"""Keepalive pings for one WebSocket: find peers that vanished without closing.

A peer whose machine died or whose network path broke sends no FIN or RST: without pings
the connection (and its app task, and its --limit-concurrency slot) would stay forever.
Every ``--ws-ping-interval`` seconds we send a Ping; if no Pong arrives within
``--ws-ping-timeout`` the peer is declared dead. Any Pong counts: RFC 6455 5.5.3 lets a peer
answer only the latest of several Pings, and an unsolicited Pong still proves it is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Keepalive:
    __slots__ = (
        "_count",
        "_dead",
        "_deadline",
        "_handle",
        "_held",
        "_ping",
        "interval",
        "loop",
        "timeout",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float | None,
        timeout: float | None,
        ping: Callable[[bytes], None],
        dead: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.interval = interval or None  # 0 or None: no pings at all
        self.timeout = timeout or None  # 0 or None: ping, but never give up on the peer
        self._ping = ping
        self._dead = dead
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._held = False
        self._count = 0

    def start(self) -> None:
        if self.interval is not None and self._handle is None:
            self._handle = self.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._handle = None
        # One Ping in flight at a time; none while held (see hold()).
        if self._deadline is None and not self._held:
            self._count += 1
            self._ping(b"%d" % self._count)
            if self.timeout is not None:
                self._deadline = self.loop.call_later(self.timeout, self._expired)
        self.start()

    def alive(self) -> None:
        """A Pong came: the peer is there."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def hold(self) -> None:
        """We stopped reading (the app's queue is full): the peer's Pong may sit unread behind
        its messages, so do not judge it until release()."""
        self._held = True
        self.alive()

    def release(self) -> None:
        self._held = False

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.alive()

    def _expired(self) -> None:
        self._deadline = None
        self.stop()
        self._dead()
