"""What every connection of one shard shares: settings, the app, counters, the Date header.

One :class:`ShardContext` exists per shard event loop. Only that loop's thread touches it, so
nothing in it is locked; thread shards each have their own.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from shardcorn.config import Config, TrustedHosts, parse_trusted_hosts
from shardcorn.logs import TRACE, access_log, error_log
from shardcorn.metrics.stats import ShardStats
from shardcorn.protocol.response import KnownHeaders

if TYPE_CHECKING:
    from shardcorn.loading import ASGIApp


class Connection:
    """What the shard needs from a live connection to shut it down."""

    __slots__ = ()  # so that a protocol's own __slots__ take effect

    def shutdown(self) -> None:  # close when idle, or after the current response
        raise NotImplementedError

    def abort(self) -> None:  # close now
        raise NotImplementedError

    def cancel(self) -> None:  # shutdown deadline: cancel the app, then close now
        raise NotImplementedError

    @property
    def busy(self) -> bool:
        raise NotImplementedError


class ShardContext:
    """Per-shard serving state, handed to every protocol instance of that shard."""

    def __init__(  # noqa: PLR0917 - shards and tests pass these by position
        self,
        config: Config,
        app: ASGIApp,
        loop: asyncio.AbstractEventLoop,
        stats: ShardStats | None = None,
        index: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.app = app
        self.loop = loop
        self.index = index
        self.stats = stats if stats is not None else ShardStats()
        self.ssl_context = ssl_context
        self.connections: set[Connection] = set()
        self.requests_in_flight = 0
        self.total_requests = 0
        self.max_requests: int | None = config.limit_max_requests
        self.shutting_down = False
        self.lifespan_state: dict[str, Any] = {}
        self.root_path = config.root_path
        self.limit_concurrency = config.limit_concurrency
        self.keep_alive_timeout = config.timeout_keep_alive
        self.access_log_enabled = config.access_log and access_log.isEnabledFor(logging.INFO)
        self.trace_enabled = error_log.isEnabledFor(TRACE)
        self.trusted: TrustedHosts | None = (
            parse_trusted_hosts(config.forwarded_allow_ips) if config.proxy_headers else None
        )
        self.ws_enabled = config.ws != "none"
        self.asgi_version = {"version": "3.0", "spec_version": "2.4"}
        self._static_headers = b"".join(b"%s: %s\r\n" % pair for pair in config.extra_headers)
        # A --header server:NAME replaces ours, as an app's own server header does.
        custom_server = any(name == b"server" for name, _ in config.extra_headers)
        if config.server_header and not custom_server:
            self._static_headers = b"server: shardcorn\r\n" + self._static_headers
        self.default_headers = b""
        # What this shard remembers of its app's response headers (protocol/response.py).
        self.known_headers = KnownHeaders()
        self._date_handle: asyncio.TimerHandle | None = None
        self.max_requests_reached: asyncio.Event | None = None
        self._all_closed: asyncio.Event | None = None
        self.update_date()

    # -- connections -----------------------------------------------------------------------
    def forget(self, connection: Connection) -> None:
        """A connection has closed (or was handed to another protocol)."""
        self.connections.discard(connection)
        if self._all_closed is not None and not self.connections:
            self._all_closed.set()

    def all_closed_event(self) -> asyncio.Event:
        """An event set once no connection is left (used by graceful shutdown)."""
        if self._all_closed is None:
            self._all_closed = asyncio.Event()
            if not self.connections:
                self._all_closed.set()
        return self._all_closed

    # -- the Date header, computed once a second instead of once a request -------------------
    def update_date(self) -> None:
        if self.config.date_header:
            date = formatdate(time.time(), usegmt=True).encode("ascii")
            self.default_headers = b"date: " + date + b"\r\n" + self._static_headers
        else:
            self.default_headers = self._static_headers

    def start_clock(self) -> None:
        self._tick()

    def _tick(self) -> None:
        self.update_date()
        # Re-arm on the next whole second so the header changes when the second does.
        now = time.time()
        self._date_handle = self.loop.call_later(1.0 - (now % 1.0) + 0.001, self._tick)

    def stop_clock(self) -> None:
        if self._date_handle is not None:
            self._date_handle.cancel()
            self._date_handle = None

    # -- request accounting ----------------------------------------------------------------
    def over_limit(self) -> bool:
        """True when --limit-concurrency says this request must get a 503."""
        limit = self.limit_concurrency
        return limit is not None and (
            len(self.connections) > limit or self.requests_in_flight >= limit
        )

    def count_request(self) -> None:
        """One more request handed to the app; stop the shard after --limit-max-requests."""
        self.total_requests += 1
        limit = self.max_requests
        reached = self.max_requests_reached
        if (
            limit is not None
            and self.total_requests >= limit
            and not self.shutting_down
            and reached is not None
            and not reached.is_set()
        ):
            error_log.info(
                "Shard %d served %d requests (--limit-max-requests): stopping",
                self.index,
                self.total_requests,
            )
            reached.set()
