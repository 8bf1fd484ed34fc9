"""What runs inside one supervised shard: in a child process, or in a thread of the launcher.

Both modes end up in :func:`run_shard`: a fresh event loop (``loops.new_event_loop``), a
:class:`~shardcorn.shards.shard.Shard` on the slot's socket, and the shard's end of the control
pipe (``control.ShardControl``) attached to that loop.

* **Process shards** start in :func:`process_main`, the target of a ``spawn`` child. The child
  gets only picklable things (the :class:`ShardSpec`, its socket, its pipe end: multiprocessing
  passes the descriptors themselves), sets up logging, imports the app itself and attaches to
  the launcher's shared stats file. It exits 0 after a clean stop, 1 when it cannot start (the
  app does not import), 3 when lifespan startup fails.
* **Thread shards** start in :func:`thread_main` with the app object the launcher loaded once
  and a duplicate of the slot's socket (asyncio closes the socket a server is given, and the
  launcher's copy must stay open). Nothing per request is shared with the other threads.

Signals belong to the launcher. A process shard ignores SIGINT (a CTRL+C in a terminal reaches
the whole process group; the launcher then stops every shard, and a second CTRL+C forces it),
SIGHUP and job-control SIGTTIN/SIGTTOU; SIGTERM sent to it directly stops it gracefully, and the
launcher replaces it like any shard that ended on its own.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection

from shardcorn.config import Config
from shardcorn.loading import AppLoadError, ASGIApp, load_app
from shardcorn.logs import error_log
from shardcorn.metrics.stats import ShardStats
from shardcorn.metrics.store import StatsStore
from shardcorn.shards.control import EXIT, HandoffStats, ShardControl, send
from shardcorn.shards.launcher import prepare_process
from shardcorn.shards.loops import close_loop, new_event_loop
from shardcorn.shards.shard import EXIT_STARTUP, Shard


@dataclass(frozen=True)
class ShardSpec:
    """Everything a shard needs to know besides its socket and pipe; picklable."""

    config: Config
    index: int  # the slot
    max_requests: int | None  # --limit-max-requests plus this shard's share of the jitter
    successor: bool  # a predecessor still serves the slot: count privately until ADOPT
    store_path: str | None = None  # process shards: the launcher's shared stats file
    store_slots: int = 0


def run_shard(
    spec: ShardSpec,
    app: ASGIApp,
    sock: socket.socket,
    conn: Connection,
    store: StatsStore,
    *,
    handle_sigterm: bool,
) -> int:
    """Serve on a new event loop until stopped; return the shard's exit code."""
    loop = new_event_loop(spec.config.loop)
    asyncio.set_event_loop(loop)
    control = ShardControl(conn, spec.index)
    stats: ShardStats
    if spec.successor:
        stats = HandoffStats()
        control.slot_block = store.block(spec.index)
    else:
        stats = store.writer(spec.index)
    shard = Shard(
        spec.config,
        app,
        [sock],
        index=spec.index,
        stats=stats,
        max_requests=spec.max_requests,
        on_max_requests=control.retire if spec.max_requests is not None else None,
    )
    control.attach(shard, loop)
    if handle_sigterm:
        loop.add_signal_handler(signal.SIGTERM, shard.stop)
    try:
        return loop.run_until_complete(shard.serve(control.ready))
    finally:
        control.detach()
        if handle_sigterm:
            loop.remove_signal_handler(signal.SIGTERM)
        close_loop(loop)


def process_main(spec: ShardSpec, sock: socket.socket, conn: Connection) -> None:
    """Entry point of a process shard (a ``spawn`` child); exits with the shard's code."""
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    config = spec.config
    try:
        prepare_process(config)
        app = load_app(config)
    except AppLoadError as exc:
        error_log.error("Shard %d: %s", spec.index, exc)
        sys.exit(EXIT_STARTUP)
    except Exception:
        # The user's module raised while importing: their bug, shown with its traceback.
        error_log.exception("Shard %d: could not load the app", spec.index)
        sys.exit(EXIT_STARTUP)
    assert spec.store_path is not None
    store = StatsStore.attach(spec.store_path, spec.store_slots)
    try:
        code = run_shard(spec, app, sock, conn, store, handle_sigterm=True)
    except Exception:
        error_log.exception("Shard %d failed", spec.index)
        code = EXIT_STARTUP
    sys.exit(code)


def thread_main(
    spec: ShardSpec, app: ASGIApp, sock: socket.socket, conn: Connection, store: StatsStore
) -> None:
    """Body of a thread shard: serve, then report the exit code and close the pipe."""
    code = EXIT_STARTUP
    try:
        code = run_shard(spec, app, sock, conn, store, handle_sigterm=False)
    except Exception:
        error_log.exception("Shard %d failed", spec.index)
    finally:
        sock.close()
        send(conn, EXIT, code)
        conn.close()
