"""A gunicorn worker class: gunicorn's process management, shardcorn's protocols.

    gunicorn myapp:app -w 4 -k shardcorn.workers.ShardcornWorker

Each gunicorn worker process serves gunicorn's listening sockets with one shardcorn
:class:`~shardcorn.shards.shard.Shard` on a uvloop loop (asyncio without uvloop). gunicorn's
settings that have a shardcorn meaning are carried over: ``--keep-alive``,
``--graceful-timeout``, ``--max-requests`` (with its jitter), ``--forwarded-allow-ips``, the
request-line and header-count limits, ``--backlog``, TLS (``--certfile``, ``--keyfile``,
``--ca-certs``, ``--cert-reqs``, ``--ciphers``) and, on gunicorn versions that have them,
``--root-path``, ``--asgi-loop`` and ``--asgi-lifespan``. With ``--reuse-port`` gunicorn gives
every worker a socket of its own, which is how shardcorn's shards work anyway.

The app may be ASGI 3, ASGI 2 or WSGI: it is told apart as ``--interface auto`` would.

Signals follow gunicorn's contract: TERM stops gracefully, INT and QUIT stop at once, USR1
reopens the log files, ABRT (the arbiter's timeout) ends the worker at once. The heartbeat gunicorn
watches is touched from the loop, so a worker whose loop is stuck is killed by the arbiter.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from types import FrameType
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from shardcorn.config import Config, ConfigError
from shardcorn.loading import AppLoadError, load_app
from shardcorn.logs import access_log, error_log
from shardcorn.shards.launcher import startup_checks
from shardcorn.shards.loops import close_loop, new_event_loop
from shardcorn.shards.shard import EXIT_LIFESPAN, Shard
from shardcorn.shards.tls import TLSError

# gunicorn kills a worker still alive graceful_timeout seconds after TERM; finish our own
# graceful shutdown (which then runs lifespan shutdown) this much before that.
SHUTDOWN_HEADROOM = 1.0


def config_from_gunicorn(worker: Worker) -> Config:
    """The shardcorn Config for a gunicorn worker: gunicorn's settings mapped to ours."""
    cfg = worker.cfg
    settings: dict[str, Any] = {
        "app": worker.wsgi,
        "timeout_keep_alive": float(cfg.keepalive),
        "timeout_graceful_shutdown": max(0.0, float(cfg.graceful_timeout) - SHUTDOWN_HEADROOM),
        "forwarded_allow_ips": ",".join(cfg.forwarded_allow_ips),
        "backlog": cfg.backlog,
        "access_log": bool(cfg.accesslog),
        # The arbiter recycles workers; the shard stops itself after this many requests.
        "limit_max_requests": worker.max_requests if worker.max_requests < sys.maxsize else None,
        "port": 0,  # the sockets come from gunicorn; host and port are never bound here
    }
    # 0 is gunicorn's "unlimited" for these two; we keep our default bound instead.
    if cfg.limit_request_line > 0:
        settings["limit_request_line"] = max(64, cfg.limit_request_line)
    if cfg.limit_request_fields > 0:
        settings["limit_request_fields"] = cfg.limit_request_fields
    root_path = getattr(cfg, "root_path", "")
    if root_path:
        settings["root_path"] = root_path.rstrip("/")
    loop = getattr(cfg, "asgi_loop", "auto")
    if loop in ("auto", "uvloop", "asyncio"):
        settings["loop"] = loop
    lifespan = getattr(cfg, "asgi_lifespan", "auto")
    if lifespan in ("auto", "on", "off"):
        settings["lifespan"] = lifespan
    if cfg.is_ssl:
        # gunicorn's --ssl-version is deprecated and ignored by gunicorn itself; so here.
        settings.update(
            ssl_certfile=cfg.certfile,
            ssl_keyfile=cfg.keyfile,
            ssl_cert_reqs=int(cfg.cert_reqs),
            ssl_ca_certs=cfg.ca_certs,
            ssl_ciphers=cfg.ciphers,
        )
    return Config(**settings)


class ShardcornWorker(Worker):  # type: ignore[misc]  # gunicorn has no type hints
    """A gunicorn worker that serves with one shardcorn shard."""

    def init_signals(self) -> None:
        # Back to the defaults: run() puts the handlers on the loop, where they are woken
        # at once instead of when the loop happens to run Python code again.
        for signum in self.SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        # ABRT is the arbiter's timeout: our loop may be stuck, so its handler is a plain
        # Python one, which runs at the next bytecode even when the loop never wakes.
        signal.signal(signal.SIGABRT, self._abort)
        # Don't let USR1 (reopen logs) interrupt system calls of requests in flight.
        signal.siginterrupt(signal.SIGUSR1, False)

    def _abort(self, signum: int, frame: FrameType | None) -> None:
        self.alive = False
        self.cfg.worker_abort(self)
        os._exit(1)  # no cleanup: whatever is stuck would block it

    def run(self) -> None:
        self._route_logs()
        try:
            config = config_from_gunicorn(self)
            startup_checks(config)
            app = load_app(config)
        except (ConfigError, AppLoadError, TLSError) as exc:
            # One line, and the code that makes the arbiter stop instead of respawning.
            self.log.error("%s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        loop = new_event_loop(config.loop)
        asyncio.set_event_loop(loop)
        shard = Shard(config, app, [s.sock for s in self.sockets], index=self.age)
        try:
            self._install_signals(loop, shard)
            loop.call_soon(self._heartbeat, loop, shard)
            code = loop.run_until_complete(shard.serve())
        finally:
            close_loop(loop)
        if code == EXIT_LIFESPAN:
            # The arbiter halts on this code instead of booting workers that fail forever.
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        sys.exit(code)

    def _route_logs(self) -> None:
        """shardcorn's loggers write through gunicorn's handlers (--error-logfile etc.)."""
        for ours, theirs in ((error_log, self.log.error_log), (access_log, self.log.access_log)):
            ours.handlers = list(theirs.handlers)
            ours.setLevel(theirs.level)
            ours.propagate = False

    def _install_signals(self, loop: asyncio.AbstractEventLoop, shard: Shard) -> None:
        def graceful() -> None:
            self.alive = False
            shard.stop()

        def quick() -> None:
            self.alive = False
            self.cfg.worker_int(self)
            shard.stop(force=True)

        loop.add_signal_handler(signal.SIGTERM, graceful)
        loop.add_signal_handler(signal.SIGINT, quick)
        loop.add_signal_handler(signal.SIGQUIT, quick)
        loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        loop.add_signal_handler(signal.SIGWINCH, lambda: None)  # gunicorn workers ignore it

    def _heartbeat(self, loop: asyncio.AbstractEventLoop, shard: Shard) -> None:
        """Tell the arbiter we are alive; stop if it is gone (we would be an orphan)."""
        self.notify()
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            self.alive = False
            shard.stop()
            return
        # gunicorn passes half its --timeout as ours; beating twice per period leaves room
        # for a loop that is busy for a moment. A --timeout of 0 means no checks at all.
        interval = self.timeout / 2 if self.timeout > 0 else 5.0
        loop.call_later(interval, self._heartbeat, loop, shard)
