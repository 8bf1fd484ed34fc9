"""The launcher: turns a Config into a running server and an exit code.

With one shard (the default) the shard runs right here, on the main thread's loop, the way
uvicorn runs without ``--workers``; signals go straight to it. With more shards the
supervisor (``shards.supervisor``) starts them as processes or threads and keeps them alive.

Exit codes: 0 after a clean stop, 1 when the server cannot start (app import, bind, TLS, a
forced stop), 3 when lifespan startup failed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from typing import TYPE_CHECKING

from shardcorn.config import Config, ConfigError
from shardcorn.loading import AppLoadError, load_app
from shardcorn.logs import configure_logging, error_log
from shardcorn.shards.loops import close_loop, loop_name, new_event_loop
from shardcorn.shards.malloc import tune_malloc
from shardcorn.shards.shard import EXIT_OK, EXIT_STARTUP, Shard
from shardcorn.shards.sockets import BindError, address_of, bind_sockets
from shardcorn.shards.tls import TLSError, create_ssl_context, warn_about_settings

if TYPE_CHECKING:
    from shardcorn.metrics.exporter import Exporter
    from shardcorn.metrics.stats import ShardStats


def prepare_process(config: Config) -> None:
    """What every process serving ``config`` does first: logging, the --env-file, malloc."""
    configure_logging(config.log_level, config.use_colors, config.access_log, config.log_config)
    if config.env_file:
        load_env_file(config.env_file)
    if config.tune_malloc:
        tune_malloc()  # after the env file, which may set glibc's own MALLOC_* variables


def load_env_file(path: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"--env-file: file not found: {path}")
    try:
        from dotenv import load_dotenv
    except ImportError:
        raise ConfigError(
            "--env-file needs python-dotenv: pip install 'shardcorn[standard]'"
        ) from None
    # Like uvicorn: a variable already set in the environment wins over the file's value.
    load_dotenv(path, override=False)


def run(config: Config, stop_signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> int:
    """Serve until stopped; return the process exit code.

    ``stop_signals`` are the signals that stop one shard served here (a --reload child is
    stopped by its parent's SIGTERM alone; see shards.reload).
    """
    try:
        prepare_process(config)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    try:
        # Here, before any dispatch, so every mode (one shard, a supervisor, --reload)
        # refuses a bad certificate with one line before it binds anything.
        ssl_context = startup_checks(config)
    except (TLSError, ConfigError) as exc:
        error_log.error("%s", exc)
        return EXIT_STARTUP
    if config.reload:
        from shardcorn.shards.reload import run_with_reload

        return run_with_reload(config)
    if config.shards > 1:
        from shardcorn.shards.supervisor import Supervisor

        return Supervisor(config).run()
    return run_single(config, stop_signals, ssl_context)


def startup_checks(config: Config) -> ssl.SSLContext | None:
    """Everything that can fail with a clear line before a socket is bound; returns the TLS
    context (None without TLS), for a shard served in this process to use as it is."""
    context = create_ssl_context(config)
    warn_about_settings(config)
    return context


def run_single(
    config: Config,
    stop_signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Serve ``config`` with one shard on this thread; ``stop_signals`` stop it gracefully.
    ``ssl_context``: the one startup_checks built (else the shard builds its own)."""
    try:
        app = load_app(config)
        sockets = bind_sockets(config, 1)
    except (AppLoadError, BindError, TLSError, ConfigError) as exc:
        error_log.error("%s", exc)
        return EXIT_STARTUP
    loop = new_event_loop(config.loop)
    asyncio.set_event_loop(loop)
    shard = Shard(
        config, app, sockets, index=0, stats=_single_stats(config), ssl_context=ssl_context
    )
    try:
        exporter = _start_exporter(config, shard)
    except BindError as exc:
        error_log.error("%s", exc)
        for sock in sockets:
            sock.close()
        if config.uds is not None and os.path.exists(config.uds):
            os.unlink(config.uds)
        close_loop(loop)
        return EXIT_STARTUP
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            error_log.info("Received %s: shutting down gracefully", signal.Signals(signum).name)
            shard.stop()
        else:
            error_log.warning("Received %s again: forcing exit", signal.Signals(signum).name)
            shard.stop(force=True)

    def on_ready() -> None:
        scheme = "https" if config.is_ssl else "http"
        for sock in sockets:
            error_log.info(
                "Shardcorn running on %s://%s (1 shard, %s; press CTRL+C to quit)",
                scheme,
                address_of(sock),
                loop_name(loop),
            )

    for signum in stop_signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        code = loop.run_until_complete(shard.serve(on_ready))
    finally:
        for signum in stop_signals:
            loop.remove_signal_handler(signum)
        close_loop(loop)
        for sock in sockets:
            sock.close()
        if config.uds is not None and os.path.exists(config.uds):
            os.unlink(config.uds)
        if exporter is not None:
            exporter.close()
    if code == EXIT_OK:
        error_log.info("Finished server process [%d]", os.getpid())
        if signals_seen > 1:
            return EXIT_STARTUP
    return code


def _single_stats(config: Config) -> ShardStats:
    """The one shard's stats: slot 0 of a one-slot store, in this process's memory."""
    from shardcorn.metrics.store import StatsStore  # beside its one use

    return StatsStore(1).writer(0)


def _start_exporter(config: Config, shard: Shard) -> Exporter | None:
    """Host the exporter in a thread of this process, reporting the one shard as slot 0."""
    if config.metrics_port is None:
        return None
    # Imported only when asked for: prometheus-client stays out of a server without it.
    from shardcorn.metrics.exporter import start_exporter
    from shardcorn.metrics.store import ShardTable, StatsStore

    table = ShardTable("single", loop_name(asyncio.get_event_loop()))
    table.shard_up(0, os.getpid())
    # A BindError for the metrics port propagates: run_single fails it like a startup error.
    return start_exporter(config, StatsStore.over(shard.stats), table)
