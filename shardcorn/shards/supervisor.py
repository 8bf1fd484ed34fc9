"""The supervisor: N shards, in processes or threads, kept serving until told to stop.

``launcher.run`` hands a Config with ``--shards 2`` or more to :class:`Supervisor`; one shard
runs inline in the launcher instead (``launcher.run_single``), like uvicorn without
``--workers``. ``Supervisor(config).run()`` returns the process exit code.

Sockets. The launcher binds one ``SO_REUSEPORT`` listening socket per shard *slot*
(``sockets.bind_sockets``: port 0 is resolved once, a probe bind turns "address in use" into
one line and exit 1) and keeps every one of them open for as long as the slot exists. A
process shard receives its slot's socket (multiprocessing passes the descriptor), a thread
shard a duplicate. Since the launcher's copy stays open, a shard that dies or is replaced never
closes its slot's listener: connections waiting in the accept queue wait for the replacement
instead of being reset, and during a handover old and new shard accept from the same queue.
Only a shard-count decrease (SIGTTOU) must close a listener; Linux then resets the connections
queued on it unless ``net.ipv4.tcp_migrate_req`` is 1, which is why start-up warns when it is 0.
To keep that window small the launcher closes its copy *before* the shard stops accepting, so
the listener goes away the moment the shard closes it, not after the shard has drained.
``--uds`` and ``--fd`` cannot be bound twice: there all shards share one socket (logged).

Process shards are ``spawn`` children, never forked: the launcher has threads (the metrics
exporter) and a fork would copy their locks mid-use. Each child receives the pickled Config,
its slot, its socket, its end of a control pipe and the path of the shared stats file
(``metrics.store.StatsStore(..., shared=True)``); it imports the app itself and runs a
``Shard`` on a fresh loop (``shards.worker``). The stats file is sized for the most slots
SIGTTIN may create, ``max(2 * --shards, --shards + 4)``. (A programmatic ``shardcorn.run()``
with process shards needs the usual ``if __name__ == "__main__":`` guard, as any ``spawn``
user does.) Thread shards share the app object the launcher loaded once, each with its own
loop and socket; signals are the launcher's alone.

Supervision, per slot (one keeper task each, so what happens to a slot happens in order):

* A shard that ends unexpectedly (an exit, SIGKILL, a segfault) is replaced on its slot, at
  once the first time, then with exponential backoff (0.5 s doubling to 30 s) while the
  replacements keep dying before they have served for 10 s.
* Health checks (``fleet``): a shard whose loop does not answer a ping over its pipe within
  ``--timeout-worker-healthcheck`` is SIGKILLed (a thread: abandoned) and replaced.
* ``--limit-max-requests`` (+ a random 0..``--limit-max-requests-jitter`` per shard) and
  SIGHUP (a rolling restart, one slot at a time) hand a slot over: the replacement starts,
  and only once it is ready does its predecessor stop accepting and drain. A replacement
  that fails to start leaves the old shard serving (SIGHUP's roll stops there).
* At first start, a shard exiting 1 (cannot start) or 3 (lifespan startup failed), or not
  ready within ``--timeout-shard-startup``, stops everything: the launcher exits with that
  code (1 for the timeout) instead of looping.

Signals: SIGTERM/SIGINT stop every shard gracefully (requests in flight finish within
``--timeout-graceful-shutdown``), then exit 0; a second one forces (exit 1). SIGHUP rolls,
SIGTTIN adds a shard, SIGTTOU removes the highest one. Replacements are recorded in the
``ShardTable`` the metrics exporter reads (reasons crash, healthcheck, max_requests, reload).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import signal
import socket
from collections.abc import Coroutine
from typing import Any

from shardcorn.config import Config, ConfigError
from shardcorn.loading import AppLoadError, ASGIApp, load_app
from shardcorn.logs import error_log
from shardcorn.metrics.store import ShardTable, StatsStore
from shardcorn.shards.fleet import Fleet, Request, Slot
from shardcorn.shards.handles import ShardHandle, describe_exit
from shardcorn.shards.loops import close_loop, loop_name, new_event_loop
from shardcorn.shards.shard import EXIT_LIFESPAN, EXIT_OK, EXIT_STARTUP
from shardcorn.shards.sockets import (
    BindError,
    address_of,
    bind_sockets,
    bind_tcp,
    shares_one_socket,
)
from shardcorn.shards.tls import TLSError

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# A shard that served this long before it died was not crash-looping: no backoff for it.
STABLE_UPTIME = 10.0
MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"

# What a slot's keeper can be asked to do (Request.kind); the first two are restart reasons.
RETIRE = "max_requests"
RELOAD = "reload"
REMOVE = "remove"


class FirstStartError(Exception):
    """A shard could not start at first start: the server stops with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def backoff(failures: int) -> float:
    """Delay before the next start after ``failures`` quick deaths in a row: the first
    replacement starts at once, then 0.5 s, 1 s, 2 s, ... up to 30 s."""
    return 0.0 if failures <= 1 else min(FIRST_BACKOFF * 2 ** (failures - 2), MAX_BACKOFF)


def migrate_req_warning() -> str | None:
    """What to tell the user about net.ipv4.tcp_migrate_req, if anything."""
    try:
        with open(MIGRATE_REQ, encoding="ascii") as fh:
            value: str | None = fh.read().strip()
    except OSError:
        value = None
    consequence = (
        "closing a SO_REUSEPORT listener resets the connections waiting in its accept "
        "queue instead of moving them to another shard. shardcorn keeps every slot's socket "
        "open across shard restarts, but a shard-count decrease (SIGTTOU) must close one"
    )
    if value is None:
        return f"net.ipv4.tcp_migrate_req is not available (Linux < 5.14): {consequence}"
    if value == "0":
        return f"net.ipv4.tcp_migrate_req is 0: {consequence}; set it to 1 to avoid that"
    return None


class Supervisor:
    """Start ``config.shards`` shards and keep them serving; :meth:`run` returns the exit code."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.mode = config.shard_mode
        self.slot_cap = max(2 * config.shards, config.shards + 4)
        self.fleet: Fleet | None = None
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._force_requested = asyncio.Event()
        self._fatal: asyncio.Future[int] | None = None
        self._signals = 0
        self._serving = False
        self._rolling: asyncio.Task[None] | None = None
        self._loop_name = "asyncio"

    # -- the whole run ---------------------------------------------------------------------
    def run(self) -> int:
        config = self.config
        app: ASGIApp | None = None
        try:
            # (TLS settings were checked by launcher.startup_checks; each shard builds its own)
            probe = new_event_loop(config.loop)
            self._loop_name = loop_name(probe)
            probe.close()
            if self.mode == "thread":
                app = load_app(config)
            else:
                self._check_picklable()
            self._sockets = bind_sockets(config, config.shards)
        except (AppLoadError, BindError, TLSError, ConfigError) as exc:
            error_log.error("%s", exc)
            return EXIT_STARTUP
        table = ShardTable(self.mode, self._loop_name)
        if self.mode == "process":
            store = StatsStore(self.slot_cap, shared=True)
            spawn = multiprocessing.get_context("spawn")
        else:
            store, spawn = StatsStore(config.shards), None
        self.fleet = Fleet(config, store, table, app, spawn)
        self.fleet.on_retire = self._on_retire
        exporter = None
        try:
            exporter = self._start_exporter(store, table)
            loop = asyncio.new_event_loop()
            try:
                code = loop.run_until_complete(self._main())
            finally:
                close_loop(loop)
        except BindError as exc:  # the metrics endpoint
            error_log.error("%s", exc)
            code = EXIT_STARTUP
        finally:
            if exporter is not None:
                exporter.close()
            self._close_sockets()
            store.close()
        if code == EXIT_OK:
            error_log.info("Finished server process [%d]", os.getpid())
        return code

    def _check_picklable(self) -> None:
        try:
            pickle.dumps(self.config)
        except Exception:
            raise ConfigError(
                "process shards need the app as an import string (module:attribute) or a "
                "picklable object; or use --shard-mode thread"
            ) from None

    def _start_exporter(self, store: StatsStore, table: ShardTable) -> Any:
        if self.config.metrics_port is None:
            return None
        # Imported only when asked for: prometheus-client stays out of a server without it.
        from shardcorn.metrics.exporter import start_exporter

        return start_exporter(self.config, store, table)

    def _close_sockets(self) -> None:
        if self.fleet is not None:
            for slot in self.fleet.slots.values():
                slot.sock.close()
        for sock in self._sockets:
            sock.close()
        uds = self.config.uds
        if uds is not None and os.path.exists(uds):
            os.unlink(uds)

    async def _main(self) -> int:
        fleet = self.fleet
        assert fleet is not None
        loop = asyncio.get_running_loop()
        self._fatal = loop.create_future()
        self._install_signals(loop)
        shared = shares_one_socket(self.config)
        if shared:
            error_log.info(
                "The %d shards share one listening socket (%s cannot be bound twice)",
                self.config.shards,
                "a UNIX socket path" if self.config.uds is not None else "an inherited --fd",
            )
        else:
            warning = migrate_req_warning()
            if warning is not None:
                error_log.warning("%s", warning)
        for index in range(self.config.shards):
            sock = self._sockets[0] if shared else self._sockets[index]
            self._open_slot(index, sock, owns_socket=not shared)
        self._sockets = []  # the slots own them now
        code = await self._first_start()
        if code is None:
            self._serving = True
            self._announce()
            stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait([stopping, self._fatal], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            code = self._fatal.result() if self._fatal.done() else EXIT_OK
        await self._shutdown()
        if code == EXIT_OK and self._force_requested.is_set():
            code = EXIT_STARTUP
        return code

    async def _first_start(self) -> int | None:
        """Wait until every slot serves; an exit code when the server must stop instead."""
        assert self.fleet is not None and self._fatal is not None
        firsts = [slot.first_ready for slot in self.fleet.slots.values() if slot.first_ready]
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(asyncio.wait(firsts)),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        await asyncio.wait([*waiters, self._fatal], return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if self._fatal.done():
            return self._fatal.result()
        if self._stopping.is_set():
            return EXIT_OK
        return None

    def _announce(self) -> None:
        assert self.fleet is not None
        slots = self.fleet.slots
        error_log.info(
            "Shardcorn running on %s://%s (%d shards, %s, %s; press CTRL+C to quit)",
            "https" if self.config.is_ssl else "http",
            address_of(slots[min(slots)].sock),
            len(slots),
            self.mode,
            self._loop_name,
        )

    def _spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _shutdown(self) -> None:
        """Stop every shard: gracefully, or forced after a second signal; kill what is left."""
        fleet = self.fleet
        assert fleet is not None
        # Keepers and the roll first, so that nothing starts a shard while we stop them.
        tasks = [*self._tasks, *fleet.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for slot in fleet.slots.values():
            if slot.owns_socket:
                slot.sock.close()  # refuse new connections while the shards drain
        await fleet.stop_all(self._force_requested)
        for slot in fleet.slots.values():
            fleet.table.shard_down(slot.index)
        error_log.info("Stopped %d shards", len(fleet.slots))

    # -- signals ---------------------------------------------------------------------------
    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        loop.add_signal_handler(signal.SIGTTIN, self._on_scale_signal, 1)
        loop.add_signal_handler(signal.SIGTTOU, self._on_scale_signal, -1)

    def _on_stop_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            error_log.info("Received %s: stopping every shard gracefully", name)
            self._stopping.set()
            return
        error_log.warning("Received %s again: forcing the shards to stop", name)
        self._force_requested.set()
        assert self.fleet is not None
        for handle in list(self.fleet.live):
            handle.stop(force=True)

    def _on_reload_signal(self) -> None:
        if not self._serving or self._stopping.is_set():
            error_log.info("Received SIGHUP while starting or stopping: ignored")
            return
        if self._rolling is not None and not self._rolling.done():
            error_log.info("Received SIGHUP: a rolling restart is already under way")
            return
        self._rolling = self._spawn_task(self._roll())

    def _on_scale_signal(self, delta: int) -> None:
        if not self._serving or self._stopping.is_set():
            error_log.info("Received SIGTTIN/SIGTTOU while starting or stopping: ignored")
        elif delta > 0:
            self._add_slot()
        else:
            self._remove_slot()

    # -- SIGHUP, SIGTTIN, SIGTTOU ----------------------------------------------------------
    async def _roll(self) -> None:
        assert self.fleet is not None
        slots = self.fleet.slots
        error_log.info("Received SIGHUP: rolling restart of %d shards, one at a time", len(slots))
        loop = asyncio.get_running_loop()
        for index in sorted(slots):
            slot = slots.get(index)
            if slot is None:
                continue  # removed since
            request = Request(RELOAD, done=loop.create_future())
            slot.requests.put_nowait(request)
            assert request.done is not None
            if not await request.done:
                error_log.error("Rolling restart stopped at shard %d", index)
                return
            if request.drained is not None:
                # One slot at a time: the old shard has drained before the next one goes.
                await asyncio.wait([request.drained])
        error_log.info("Rolling restart complete")

    def _open_slot(self, index: int, sock: socket.socket, owns_socket: bool) -> None:
        assert self.fleet is not None
        slot = Slot(index, sock, owns_socket)
        slot.first_ready = asyncio.get_running_loop().create_future()
        self.fleet.slots[index] = slot
        slot.keeper = self._spawn_task(self._keep(slot))

    def _add_slot(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        index = min(i for i in range(self.slot_cap + 1) if i not in fleet.slots)
        if index >= self.slot_cap:
            error_log.warning(
                "Received SIGTTIN: already at the most shards this launcher allows (%d)",
                self.slot_cap,
            )
            return
        model = next(iter(fleet.slots.values()))
        sock = model.sock
        if model.owns_socket:
            try:
                sock = bind_tcp(self.config.host, sock.getsockname()[1], self.config.backlog)
            except BindError as exc:
                error_log.error("Received SIGTTIN: cannot add a shard: %s", exc)
                return
        if not fleet.store.shared:
            fleet.store.grow(index + 1)  # thread mode; a shared store is sized for slot_cap
        error_log.info("Received SIGTTIN: adding shard %d", index)
        self._open_slot(index, sock, owns_socket=model.owns_socket)

    def _remove_slot(self) -> None:
        assert self.fleet is not None
        slots = [slot for slot in self.fleet.slots.values() if not slot.removing]
        if len(slots) <= 1:
            error_log.info("Received SIGTTOU: one shard left, not removing it")
            return
        slot = max(slots, key=lambda s: s.index)
        error_log.info("Received SIGTTOU: removing shard %d", slot.index)
        slot.removing = True
        slot.requests.put_nowait(Request(REMOVE))

    # -- one slot's keeper -----------------------------------------------------------------
    async def _keep(self, slot: Slot) -> None:
        try:
            await self._keep_serving(slot)
        except FirstStartError as exc:
            self._fail(exc.code)
        except asyncio.CancelledError:
            raise
        except Exception:
            error_log.exception("Supervisor: the keeper of shard %d failed", slot.index)
            self._fail(EXIT_STARTUP)

    def _fail(self, code: int) -> None:
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_result(code)

    async def _keep_serving(self, slot: Slot) -> None:
        """Keep one shard serving on ``slot`` until the slot is removed (or cancelled)."""
        loop = asyncio.get_running_loop()
        reason: str | None = None  # why the next start replaces a shard (None: first start)
        while True:
            handle = await self._start_until_ready(slot, reason)
            if handle is None:  # removed while no shard served it
                await self._close_slot(slot)
                return
            if slot.first_ready is not None and not slot.first_ready.done():
                slot.first_ready.set_result(None)
            while slot.current is not None and slot.current.alive:
                request = await self._next_request(slot, slot.current)
                if request is None:
                    continue  # the shard ended, or the request is about its predecessor
                if request.kind == REMOVE:
                    await self._close_slot(slot)
                    return
                await self._hand_over(slot, request)
            handle = slot.current or handle
            code = handle.exited.result() if handle.exited.done() else None
            reason = "healthcheck" if handle.hung else "crash"
            lived = loop.time() - handle.ready_at if handle.ready_at is not None else 0.0
            slot.failures = 0 if lived >= STABLE_UPTIME else slot.failures + 1
            error_log.warning(
                "Shard %d (%s) %s%s; replacing it",
                slot.index,
                handle.name,
                describe_exit(code),
                " after failing its health check" if handle.hung else "",
            )
            slot.current = None

    async def _next_request(self, slot: Slot, handle: ShardHandle) -> Request | None:
        """The next request for ``slot``, or None once ``handle`` has ended."""
        getter: asyncio.Future[Any] = asyncio.ensure_future(slot.requests.get())
        await asyncio.wait([getter, handle.exited], return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            return None
        request: Request = getter.result()
        if request.handle is not None and request.handle is not handle:
            return None  # about a shard that has been replaced since
        return request

    async def _start_until_ready(self, slot: Slot, reason: str | None) -> ShardHandle | None:
        """Start shards on ``slot`` (with backoff) until one is ready and return it; None if
        the slot was removed meanwhile. Raises FirstStartError when the server must stop."""
        fleet = self.fleet
        assert fleet is not None
        while not slot.removing:
            delay = backoff(slot.failures)
            if delay:
                error_log.warning(
                    "Shard %d failed %d times in a row: next start in %.1fs",
                    slot.index,
                    slot.failures,
                    delay,
                )
                await asyncio.sleep(delay)
                if slot.removing:
                    break
            if reason is not None:
                fleet.table.restarted(slot.index, reason)
            handle = fleet.start(slot, successor=False)
            code = EXIT_STARTUP
            problem: str | None = "could not be started"
            if handle is not None:
                slot.current = handle
                problem = await fleet.until_ready(handle)
                if problem is None:
                    fleet.now_serving(slot, handle)
                    if reason is not None:
                        error_log.info(
                            "Shard %d replaced (%s) by %s", slot.index, reason, handle.name
                        )
                    return handle
                result = handle.exited.result() if handle.exited.done() else None
                code = result if result is not None else EXIT_STARTUP
                slot.current = None
            error_log.error("Shard %d %s", slot.index, problem)
            if not self._serving and code in (EXIT_STARTUP, EXIT_LIFESPAN):
                raise FirstStartError(code)
            slot.failures += 1
            reason = "crash"
        return None

    async def _hand_over(self, slot: Slot, request: Request) -> None:
        """Replace the slot's shard (max-requests or SIGHUP): the successor is ready before
        the old one stops accepting and drains."""
        fleet = self.fleet
        assert fleet is not None
        old = slot.current
        assert old is not None
        fleet.table.restarted(slot.index, request.kind)
        new = fleet.start(slot, successor=True)
        problem = "could not be started" if new is None else await fleet.until_ready(new)
        if new is None or problem is not None:
            error_log.error(
                "Shard %d: its replacement %s; %s keeps serving", slot.index, problem, old.name
            )
            if request.kind == RETIRE:
                self._retry_retire(slot, old)
            self._resolve(request, ok=False)
            return
        fleet.now_serving(slot, new)
        slot.current = new
        slot.failures = 0
        if old.alive:
            error_log.info(
                "Shard %d replaced (%s): %s -> %s; %s drains",
                slot.index,
                request.kind,
                old.name,
                new.name,
                old.name,
            )
            request.drained = fleet.spawn_task(fleet.stop_and_wait(old, handoff=True))
        self._resolve(request, ok=True)

    @staticmethod
    def _resolve(request: Request, ok: bool) -> None:
        if request.done is not None and not request.done.done():
            request.done.set_result(ok)

    def _on_retire(self, handle: ShardHandle) -> None:
        assert self.fleet is not None
        slot = self.fleet.slots.get(handle.index)
        if slot is not None and slot.current is handle and not self._stopping.is_set():
            error_log.info(
                "Shard %d (%s) reached --limit-max-requests: replacing it",
                handle.index,
                handle.name,
            )
            slot.requests.put_nowait(Request(RETIRE, handle))

    def _retry_retire(self, slot: Slot, handle: ShardHandle) -> None:
        """A max-requests replacement failed to start: the old shard serves on; try again
        after the crash-loop backoff."""
        slot.failures += 1

        def again() -> None:
            if slot.current is handle and handle.alive:
                slot.requests.put_nowait(Request(RETIRE, handle))

        asyncio.get_running_loop().call_later(max(backoff(slot.failures), 1.0), again)

    async def _close_slot(self, slot: Slot) -> None:
        """SIGTTOU: stop the slot's shard and close the slot for good."""
        fleet = self.fleet
        assert fleet is not None
        if slot.owns_socket:
            # First, so that the listener closes when the shard closes its copy: then only
            # the connections queued at that very moment can be reset (tcp_migrate_req=0).
            slot.sock.close()
        if slot.current is not None and slot.current.alive:
            await fleet.stop_and_wait(slot.current, handoff=True)
        del fleet.slots[slot.index]
        fleet.table.shard_down(slot.index)
        while not slot.requests.empty():
            # A roll waiting on this slot: there is nothing left to restart.
            self._resolve(slot.requests.get_nowait(), ok=True)
        error_log.info("Shard %d removed: %d shards", slot.index, len(fleet.slots))
