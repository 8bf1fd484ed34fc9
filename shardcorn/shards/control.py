"""The control pipe between the launcher and one supervised shard, and the shard's end of it.

Every supervised shard, process or thread, gets one end of a ``multiprocessing.Pipe``; the
launcher keeps the other. The same few messages flow over it in both modes, so health checks,
readiness and stopping work the same way whether the shard is a child process or a thread:

=========================  =====================================================================
shard -> launcher          meaning
=========================  =====================================================================
``(HELLO, pid)``           the shard's event loop runs (the app is imported); pings start now
``(READY, loop_name)``     lifespan startup is done and the shard accepts on its socket
``(PONG, seq)``            answer to a ping, sent from the shard's loop: the loop is not stuck
``(RETIRE, requests)``     ``--limit-max-requests`` reached; the shard serves on until stopped
``(EXIT, code)``           (thread shards only) the shard has finished with this exit code
=========================  =====================================================================

=========================  =====================================================================
launcher -> shard          meaning
=========================  =====================================================================
``(PING, seq)``            health check
``(STOP, force, handoff)`` stop: gracefully, or at once (``force``); ``handoff`` when other
                           shards keep serving (see ``Shard.stop``)
``(ADOPT,)``               the predecessor on this slot has gone: count into the slot's own
                           stats block from now on (see ``HandoffStats``)
=========================  =====================================================================

End of file on the pipe means the other side is gone: the launcher sees a shard end; a shard
whose launcher died stops gracefully instead of serving on as an orphan.

Messages are tuples of a few small values. A pipe write that small is atomic, so the reader,
woken by its loop when the pipe is readable, never blocks on half a message.
"""

from __future__ import annotations

import asyncio
import os
from multiprocessing.connection import Connection
from typing import Any

from shardcorn.logs import error_log
from shardcorn.metrics.stats import GAUGES, INT_SLOTS, ShardStats
from shardcorn.shards.loops import loop_name
from shardcorn.shards.shard import Shard

HELLO = "hello"
READY = "ready"
PONG = "pong"
RETIRE = "retire"
EXIT = "exit"
PING = "ping"
STOP = "stop"
ADOPT = "adopt"


def receive_all(conn: Connection) -> tuple[list[tuple[Any, ...]], bool]:
    """Every message waiting on ``conn`` without blocking, and whether the pipe has closed."""
    messages: list[tuple[Any, ...]] = []
    try:
        while conn.poll():
            messages.append(conn.recv())
    except (EOFError, OSError):
        return messages, True
    return messages, False


def send(conn: Connection, *message: Any) -> bool:
    """Send one message; False when the other side is gone (it is then no longer listening)."""
    try:
        conn.send(message)
    except (OSError, ValueError):  # ValueError: our end was closed already
        return False
    return True


class HandoffStats(ShardStats):
    """Stats of a replacement shard that starts while its predecessor still serves the slot.

    A slot's stats block has one writer at a time (``+=`` on shared memory is a read and a
    write, so two shards counting into one block lose increments, and a newcomer resetting
    the gauges would drive the draining shard's decrements below zero). So the replacement
    counts into a private block first; when the launcher reports the predecessor gone, it
    adds its counters into the slot's block, puts its own gauges there, and writes only there
    from then on. Counters thus never go backwards; until the adoption a scrape shows only the
    predecessor's side of the slot (for at most the predecessor's drain time).
    """

    __slots__ = ("adopted",)

    def __init__(self) -> None:
        super().__init__()
        self.adopted = False

    def adopt(self, block: memoryview) -> None:
        """Move to ``block`` (the slot's own). Called on the shard's loop thread, its only
        writer, so no increment can slip in between the copy and the switch."""
        if self.adopted:
            return
        # Constructing a writer resets the gauges the predecessor left in the block.
        target = ShardStats(block)
        own = self._ints.tolist()
        gauges = set(GAUGES)
        for slot in range(INT_SLOTS):
            if slot in gauges:
                target._ints[slot] = own[slot]
            elif own[slot]:
                target._ints[slot] += own[slot]
        target._sum[0] += self._sum[0]
        self._ints, self._sum, self.block = target._ints, target._sum, target.block
        self.adopted = True


class ShardControl:
    """The shard's end of the control pipe, served on the shard's own event loop."""

    def __init__(self, conn: Connection, index: int) -> None:
        self.conn = conn
        self.index = index
        self.shard: Shard | None = None
        self.slot_block: memoryview | None = None  # where HandoffStats moves on ADOPT
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open = True

    def attach(self, shard: Shard, loop: asyncio.AbstractEventLoop) -> None:
        """Start answering the launcher (call before ``shard.serve`` runs on ``loop``)."""
        self.shard = shard
        self._loop = loop
        loop.add_reader(self.conn.fileno(), self._on_readable)
        self._send(HELLO, os.getpid())

    def detach(self) -> None:
        if self._loop is not None and self._open and not self._loop.is_closed():
            self._loop.remove_reader(self.conn.fileno())
        self._open = False

    # -- shard -> launcher ----------------------------------------------------------------
    def ready(self) -> None:
        assert self._loop is not None
        self._send(READY, loop_name(self._loop))

    def retire(self) -> None:
        requests = self.shard.ctx.total_requests if self.shard and self.shard.ctx else 0
        self._send(RETIRE, requests)

    def _send(self, *message: Any) -> None:
        if self._open and not send(self.conn, *message):
            self._launcher_gone()

    # -- launcher -> shard ----------------------------------------------------------------
    def _on_readable(self) -> None:
        messages, closed = receive_all(self.conn)
        for message in messages:
            self._handle(message)
        if closed:
            self._launcher_gone()

    def _handle(self, message: tuple[Any, ...]) -> None:
        shard = self.shard
        assert shard is not None
        kind = message[0]
        if kind == PING:
            self._send(PONG, message[1])
        elif kind == STOP:
            shard.stop(force=bool(message[1]), handoff=bool(message[2]))
        elif kind == ADOPT:
            stats = shard.stats
            if isinstance(stats, HandoffStats) and self.slot_block is not None:
                stats.adopt(self.slot_block)
        else:
            error_log.warning("Shard %d: unknown control message %r", self.index, kind)

    def _launcher_gone(self) -> None:
        if not self._open:
            return
        self.detach()
        error_log.warning("Shard %d: lost the launcher: stopping", self.index)
        if self.shard is not None:
            self.shard.stop()
