"""One shard: its own event loop serving its own listening socket(s).

A shard runs lifespan startup, serves until told to stop (a signal, the launcher, or
``--limit-max-requests``), then shuts down gracefully: it stops accepting, lets requests in
flight finish within ``--timeout-graceful-shutdown`` (closing idle keep-alive connections at
once), aborts what is left, and runs lifespan shutdown.

A shard stopped for a *handoff* (``stop(handoff=True)``: a replacement, or the other shards,
keep serving its traffic) first gives its idle connections :data:`LAST_REQUEST_GRACE` to send
one more request, answered with ``Connection: close``. Closing them at once would fail every
request a client had already put on an idle keep-alive connection, and every fresh connection
accepted just before the listener closed whose request had not been read yet: a rolling
restart would then cost requests even though another shard was ready to take them.

Exit codes, shared with the launcher: 0 stopped normally, 1 could not start (app import,
bind, TLS), 3 lifespan startup failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

from shardcorn.config import Config
from shardcorn.loading import ASGIApp
from shardcorn.logs import error_log
from shardcorn.metrics.stats import ShardStats
from shardcorn.protocol.context import ShardContext
from shardcorn.protocol.cycle import request_tasks
from shardcorn.protocol.http import HttpProtocol
from shardcorn.protocol.lifespan import Lifespan, LifespanFailed
from shardcorn.shards.accept import DescriptorWatch
from shardcorn.shards.tls import create_ssl_context

EXIT_OK = 0
EXIT_STARTUP = 1
EXIT_LIFESPAN = 3

# Long enough for a client that already chose an idle connection (or a connection accepted as
# the listener closed) to get its request across on a busy machine; short next to the
# keep-alive timeout (5 s by default) that every client must expect anyway.
LAST_REQUEST_GRACE = 1.0

# How long requests cancelled at the end of the graceful period get to run their cleanup.
CANCEL_GRACE = 2.0
# Loop iterations between closing the listener and shutting connections down (see _shutdown).
ACCEPTED_SETTLE_ITERATIONS = 4


class Shard:
    """Serve ``sockets`` with ``app`` on the running loop until :meth:`stop` is called."""

    def __init__(
        self,
        config: Config,
        app: ASGIApp,
        sockets: list[socket.socket],
        index: int = 0,
        stats: ShardStats | None = None,
        *,
        max_requests: int | None = None,
        on_max_requests: Callable[[], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``max_requests`` overrides ``--limit-max-requests`` (the supervisor adds jitter).
        With ``on_max_requests`` the shard only reports reaching it and keeps serving until
        stopped, so that its replacement can be ready first; without, it stops itself.
        ``ssl_context``: a context already built from ``config`` (built here if None)."""
        self.ssl_context = ssl_context
        self.config = config
        self.app = app
        self.sockets = sockets
        self.index = index
        self.stats = stats if stats is not None else ShardStats()
        self.max_requests = max_requests
        self.on_max_requests = on_max_requests
        self.ctx: ShardContext | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False  # stop() may come before serve() has made the event
        self._force = False
        self._handoff = False
        self.servers: list[asyncio.Server] = []
        self.descriptors: DescriptorWatch | None = None

    def stop(self, force: bool = False, handoff: bool = False) -> None:
        """Ask the shard to stop (from its own loop thread). ``force`` skips the grace period;
        ``handoff`` says other shards keep serving, so idle connections get a last request."""
        self._force = self._force or force
        self._handoff = handoff
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()
        if force and self.ctx is not None:
            for connection in list(self.ctx.connections):
                connection.abort()

    async def _start_lifespan(self, lifespan: Lifespan) -> bool:
        """Run lifespan startup unless stop() comes first; False if it did. A signal while
        the app starts must not wait for a startup that may never end."""
        assert self._stop is not None
        startup = asyncio.ensure_future(lifespan.startup())
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({startup, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if startup.done():
            startup.result()  # raises LifespanFailed
            return True
        startup.cancel()
        await asyncio.wait({startup})
        error_log.info("Stopped during application startup.")
        return False

    async def serve(self, on_ready: Callable[[], None] | None = None) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        ssl_context = self.ssl_context
        if ssl_context is None and self.config.is_ssl:
            ssl_context = create_ssl_context(self.config)
        ctx = self.ctx = ShardContext(
            self.config, self.app, loop, self.stats, self.index, ssl_context
        )
        if self.max_requests is not None:
            ctx.max_requests = self.max_requests
        lifespan = Lifespan(self.app, self.config.lifespan, ctx.lifespan_state)
        try:
            started = await self._start_lifespan(lifespan)
        except LifespanFailed as exc:
            error_log.error("Application startup failed: %s", exc)
            return EXIT_LIFESPAN
        if not started:
            return EXIT_OK  # stopped while the app was starting: nothing was served
        announce: asyncio.Task[None] | None = None
        if self.on_max_requests is None:
            ctx.max_requests_reached = self._stop
        else:
            reached = ctx.max_requests_reached = asyncio.Event()
            announce = loop.create_task(self._announce(reached, self.on_max_requests))
        for sock in self.sockets:
            server = await loop.create_server(
                lambda: HttpProtocol(ctx),
                sock=sock,
                backlog=self.config.backlog,
                ssl=ctx.ssl_context,
            )
            self.servers.append(server)
        if self.sockets:
            # EMFILE on accept: logged once per interval, never a busy loop (shards/accept.py).
            self.descriptors = DescriptorWatch(
                loop, self.sockets[0].fileno(), lambda: len(ctx.connections), self.index
            )
            self.descriptors.start()
        self.stats.shard_started()
        ctx.start_clock()
        if on_ready is not None:
            on_ready()
        if not self._stop.is_set():
            await self._stop.wait()
        if announce is not None:
            announce.cancel()
        await self._shutdown(lifespan)
        return EXIT_OK

    @staticmethod
    async def _announce(reached: asyncio.Event, callback: Callable[[], None]) -> None:
        await reached.wait()
        callback()

    async def _shutdown(self, lifespan: Lifespan) -> None:
        ctx = self.ctx
        assert ctx is not None
        for server in self.servers:
            server.close()  # stop accepting; the launcher's copy of the socket keeps its queue
        if not self._force:
            # A connection accepted just before the close gets connection_made a loop
            # iteration or two later (uvloop: one, asyncio: a task step, then one). Marked
            # shutting_down by then, it would be closed with its request unread: a reset, on
            # a connection the client has every right to expect an answer on.
            for _ in range(ACCEPTED_SETTLE_ITERATIONS):
                await asyncio.sleep(0)
        ctx.shutting_down = True
        timeout = 0.0 if self._force else self.config.timeout_graceful_shutdown
        deadline = ctx.loop.time() + timeout
        drained = ctx.all_closed_event()
        if self._handoff and not self._force and ctx.connections:
            # Requests arriving now are answered with "Connection: close" (shutting_down).
            grace = min(LAST_REQUEST_GRACE, timeout)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(drained.wait(), grace)
        for connection in list(ctx.connections):
            connection.shutdown()
        if ctx.connections:
            try:
                await asyncio.wait_for(drained.wait(), max(0.0, deadline - ctx.loop.time()))
            except asyncio.TimeoutError:
                error_log.warning(
                    "Shard %d: %d connection(s) still busy after %.1fs: cancelling",
                    self.index,
                    len(ctx.connections),
                    timeout,
                )
                for connection in list(ctx.connections):
                    connection.cancel()
                # Let the cancelled requests unwind before lifespan shutdown closes what their
                # cleanup may still use; an app that ignores cancellation is not waited for.
                unwinding = request_tasks()
                if unwinding:
                    await asyncio.wait(unwinding, timeout=CANCEL_GRACE)
        ctx.stop_clock()
        if self.descriptors is not None:
            self.descriptors.stop()
        if not self._force:
            await lifespan.shutdown()
        self.stats.shard_stopped()
