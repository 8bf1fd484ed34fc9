"""The supervisor's shards as a whole: starting one on a slot, health checks, stopping them.

:class:`Fleet` knows every shard the launcher has started and not yet seen end (``live``),
and every slot (``slots``). It starts process or thread shards (``handles``), waits for them
to be ready within ``--timeout-shard-startup``, pings them, stops them within a deadline and
kills what overstays. *What* to start and when is the supervisor's business
(``supervisor``); this module only does it and keeps the books:

* the ``ShardTable`` the metrics exporter reads (which slot runs which pid), and
* who writes each slot's stats block. A block has one writer at a time: a shard started on an
  empty slot writes it from its first moment (its ``owner``); a replacement started while the
  old shard still serves counts privately (``control.HandoffStats``) and becomes the owner,
  with ``ADOPT``, when the old one has gone.

Health checks start once a shard's loop runs (its HELLO: the app is imported by then). Every
``min(timeout / 4, 1 s)`` the shard is pinged; a shard that has said nothing for
``--timeout-worker-healthcheck`` is killed (a process) or abandoned (a thread, which cannot
be killed), and its keeper in the supervisor sees it end and replaces it.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext
from typing import Any

from shardcorn.config import Config
from shardcorn.loading import ASGIApp
from shardcorn.logs import error_log
from shardcorn.metrics.store import ShardTable, StatsStore
from shardcorn.shards.handles import ProcessHandle, ShardHandle, ThreadHandle, describe_exit
from shardcorn.shards.shard import EXIT_OK
from shardcorn.shards.worker import ShardSpec

# A stopping shard gets --timeout-graceful-shutdown for its requests, and this much more for
# lifespan shutdown and exiting, before it is killed.
STOP_MARGIN = 5.0
# After a forced stop (a second CTRL+C), this long before SIGKILL.
FORCE_WAIT = 3.0
# Pings per health-check timeout, and the most time between two pings.
PINGS_PER_TIMEOUT = 4
MAX_PING_INTERVAL = 1.0


@dataclass(eq=False)
class Request:
    """Something a slot's keeper is asked to do (see ``supervisor``)."""

    kind: str
    handle: ShardHandle | None = None  # the shard it is about (None: whichever serves)
    done: asyncio.Future[bool] | None = None
    drained: asyncio.Task[None] | None = None  # a handover: the old shard's stop


@dataclass(eq=False)
class Slot:
    index: int
    sock: socket.socket  # the launcher's copy, kept open for the slot's lifetime
    owns_socket: bool  # False with --uds/--fd: the one socket every slot shares
    requests: asyncio.Queue[Request] = field(default_factory=asyncio.Queue)
    current: ShardHandle | None = None  # the shard serving (or about to serve) the slot
    owner: ShardHandle | None = None  # the shard that writes the slot's stats block
    heir: ShardHandle | None = None  # a ready successor waiting for the owner to go
    failures: int = 0  # starts or runs that failed in a row
    removing: bool = False  # SIGTTOU chose this slot
    first_ready: asyncio.Future[None] | None = None
    keeper: asyncio.Task[None] | None = None


async def wait_exit(handle: ShardHandle, timeout: float) -> bool:
    """Wait (at most ``timeout``) for ``handle`` to end; whether it has."""
    if not handle.exited.done():
        await asyncio.wait([handle.exited], timeout=timeout)
    return handle.exited.done()


class Fleet:
    """Every shard the launcher runs, and the slots they run on."""

    def __init__(
        self,
        config: Config,
        store: StatsStore,
        table: ShardTable,
        app: ASGIApp | None,
        spawn_context: SpawnContext | None,
    ) -> None:
        self.config = config
        self.store = store
        self.table = table
        self.app = app  # thread mode: the one app object every shard serves
        self.spawn_context = spawn_context  # process mode
        self.slots: dict[int, Slot] = {}
        self.live: set[ShardHandle] = set()
        self.on_retire: Callable[[ShardHandle], None] = lambda handle: None
        self.tasks: set[asyncio.Task[Any]] = set()
        self._health: dict[ShardHandle, asyncio.Task[None]] = {}

    def spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- starting --------------------------------------------------------------------------
    def start(self, slot: Slot, successor: bool) -> ShardHandle | None:
        """Start one shard on ``slot``; None when the system refused (logged)."""
        config = self.config
        max_requests = config.limit_max_requests
        if max_requests is not None and config.limit_max_requests_jitter:
            # Jitter, so that shards started together do not all recycle together.
            max_requests += random.randint(0, config.limit_max_requests_jitter)
        spec = ShardSpec(
            config,
            slot.index,
            max_requests,
            successor,
            self.store.path,
            self.store.slots,
        )
        handle: ShardHandle
        try:
            if self.spawn_context is not None:
                handle = ProcessHandle(spec, self._on_gone, self.on_retire)
                handle.start(self.spawn_context, slot.sock)
            else:
                assert self.app is not None
                handle = ThreadHandle(spec, self._on_gone, self.on_retire)
                handle.start(self.app, slot.sock.dup(), self.store)
        except OSError as exc:
            error_log.error("Shard %d: cannot start: %s", slot.index, exc)
            return None
        if not successor:
            slot.owner = handle  # it writes the slot's stats block from its first moment
        self.live.add(handle)
        handle.exited.add_done_callback(lambda _: self.live.discard(handle))
        self._health[handle] = self.spawn_task(self._watch_health(handle))
        return handle

    async def until_ready(self, handle: ShardHandle) -> str | None:
        """None once ``handle`` is ready; else what went wrong (it has ended by then)."""
        timeout = self.config.timeout_shard_startup
        waiting: list[asyncio.Future[Any]] = [handle.ready, handle.exited]
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if handle.ready.done() and not handle.ready.cancelled():
            return None
        if not handle.exited.done():
            handle.kill()
            await wait_exit(handle, STOP_MARGIN)
            return f"({handle.name}) was not ready within {timeout:g}s (--timeout-shard-startup)"
        return f"({handle.name}) {describe_exit(handle.exited.result())} while starting"

    def now_serving(self, slot: Slot, handle: ShardHandle) -> None:
        """``handle`` is ready on ``slot``: record it, and give it the stats block if free."""
        error_log.info("Shard %d started (%s)", slot.index, handle.name)
        if slot.owner is handle:
            self.table.shard_up(slot.index, handle.pid)
        elif slot.owner is None or not slot.owner.alive:
            self._make_owner(slot, handle)
        else:
            slot.heir = handle  # takes the block over when the owner has gone (_on_gone)

    def _make_owner(self, slot: Slot, handle: ShardHandle) -> None:
        slot.owner, slot.heir = handle, None
        self.table.shard_up(slot.index, handle.pid)
        handle.adopt()

    def _on_gone(self, handle: ShardHandle) -> None:
        """A shard has ended (for a process: before it is reaped, see ``handles``)."""
        task = self._health.pop(handle, None)
        if task is not None:
            task.cancel()
        slot = self.slots.get(handle.index)
        if slot is None:
            return
        if slot.owner is handle:
            heir = slot.heir
            if heir is not None and heir.alive:
                self._make_owner(slot, heir)
            else:
                slot.owner = None
                self.table.shard_down(slot.index)
        elif slot.heir is handle:
            slot.heir = None

    # -- stopping --------------------------------------------------------------------------
    async def stop_and_wait(self, handle: ShardHandle, handoff: bool = False) -> None:
        """Stop ``handle`` gracefully; kill it if it has not ended by the deadline."""
        task = self._health.pop(handle, None)
        if task is not None:
            task.cancel()  # a draining shard is bounded by the deadline below instead
        handle.stop(handoff=handoff)
        timeout = self.config.timeout_graceful_shutdown + STOP_MARGIN
        if not await wait_exit(handle, timeout):
            error_log.warning(
                "Shard %d (%s) did not stop within %.0fs: killing it",
                handle.index,
                handle.name,
                timeout,
            )
            handle.kill()
            await wait_exit(handle, STOP_MARGIN)
        if handle.exited.done():
            code = handle.exited.result()
            error_log.info(
                "Shard %d (%s) stopped%s",
                handle.index,
                handle.name,
                "" if code == EXIT_OK else f": it {describe_exit(code)}",
            )

    async def stop_all(self, force_requested: asyncio.Event) -> None:
        """Stop every live shard at once: gracefully, or forced once ``force_requested`` is
        set (then, or after the deadline, what is left is killed)."""
        loop = asyncio.get_running_loop()
        forced = force_requested.is_set()
        for handle in list(self.live):
            handle.stop(force=forced)
        wait = FORCE_WAIT if forced else self.config.timeout_graceful_shutdown + STOP_MARGIN
        deadline = loop.time() + wait
        while self.live and loop.time() < deadline:
            exits: list[asyncio.Future[Any]] = [handle.exited for handle in self.live]
            force = asyncio.ensure_future(force_requested.wait())
            await asyncio.wait(
                [*exits, force], timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
            )
            force.cancel()
            if force_requested.is_set() and not forced:
                forced = True  # the signal handler has already told every shard
                deadline = min(deadline, loop.time() + FORCE_WAIT)
        for handle in list(self.live):
            error_log.warning(
                "Shard %d (%s) did not stop in time: killing it", handle.index, handle.name
            )
            handle.kill()
        if self.live:
            await asyncio.wait([handle.exited for handle in self.live], timeout=STOP_MARGIN)

    # -- health checks ---------------------------------------------------------------------
    async def _watch_health(self, handle: ShardHandle) -> None:
        """Ping the shard once its loop runs; kill (or abandon) it when it stops answering."""
        timeout = self.config.timeout_worker_healthcheck
        interval = min(timeout / PINGS_PER_TIMEOUT, MAX_PING_INTERVAL)
        loop = asyncio.get_running_loop()
        started: list[asyncio.Future[Any]] = [handle.hello, handle.exited]
        await asyncio.wait(started, return_when=asyncio.FIRST_COMPLETED)
        while handle.alive and not handle.stopping:
            await asyncio.sleep(interval)
            if not handle.alive or handle.stopping:
                return
            silent = loop.time() - handle.last_answer
            if silent > timeout:
                handle.hung = True
                error_log.error(
                    "Shard %d (%s) has not answered a health check for %.1fs: %s",
                    handle.index,
                    handle.name,
                    silent,
                    "killing it" if handle.mode == "process" else "abandoning its thread",
                )
                handle.kill()
                return
            handle.ping()
