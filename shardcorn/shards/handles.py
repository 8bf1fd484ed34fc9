"""The launcher's handle on one shard it started: a child process or a thread.

A handle starts its shard, listens on the control pipe (see ``control``) from the launcher's
event loop, and turns what it hears into three futures the supervisor awaits:

* ``hello``: the shard's loop runs (health checks start here);
* ``ready``: the shard accepts on its socket (its result is the loop's name);
* ``exited``: the shard has ended, with its exit code (negative: killed by that signal;
  ``None``: a hung thread shard that was abandoned, see below).

A process shard's end is seen on ``Process.sentinel`` (readable once the child has exited), not
by polling ``is_alive()``; a thread shard's end is the end of file on its pipe, which it closes
as its last act. ``on_gone`` runs just before the exit is reported, and for a process before it
is reaped, so that the launcher's table can still read the dead process's CPU time.

A thread cannot be killed. A thread shard whose loop stops answering health checks is
*abandoned*: it is told to stop at once (it will, if its loop ever runs again), the launcher
forgets it and starts a replacement on the slot; the thread, a daemon, ends with the process at
the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from typing import Any

from shardcorn.loading import ASGIApp
from shardcorn.logs import error_log
from shardcorn.metrics.store import StatsStore
from shardcorn.shards import control
from shardcorn.shards.shard import EXIT_STARTUP
from shardcorn.shards.worker import ShardSpec, process_main, thread_main

# After the sentinel says a child has exited, reaping it is immediate; bound it anyway.
_REAP_TIMEOUT = 5.0
_thread_numbers = itertools.count(1)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "was abandoned"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class ShardHandle:
    """What the supervisor knows about one shard it started."""

    mode = ""

    def __init__(
        self,
        spec: ShardSpec,
        on_gone: Callable[[ShardHandle], None],
        on_retire: Callable[[ShardHandle], None],
    ) -> None:
        self.spec = spec
        self.index = spec.index
        self.loop = asyncio.get_running_loop()
        self.on_gone = on_gone
        self.on_retire = on_retire
        self.hello: asyncio.Future[None] = self.loop.create_future()
        self.ready: asyncio.Future[str] = self.loop.create_future()
        self.exited: asyncio.Future[int | None] = self.loop.create_future()
        self.started_at = self.loop.time()
        self.ready_at: float | None = None
        self.last_answer = self.started_at
        self.pid: int | None = None  # the table's pid: None for thread shards
        self.name = ""  # for the log: "pid 1234" or "thread 7"
        self.stopping = False  # the launcher asked it to stop: its end is expected
        self.hung = False  # it failed a health check and was killed or abandoned
        self._conn: Connection | None = None
        self._ping_seq = 0
        self._exit_code: int | None = None  # thread shards report theirs over the pipe
        self._gone_reported = False

    def __repr__(self) -> str:
        return f"<shard {self.index} {self.name}>"

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    # -- talking to the shard --------------------------------------------------------------
    def ping(self) -> None:
        self._ping_seq += 1
        self._send(control.PING, self._ping_seq)

    def stop(self, force: bool = False, handoff: bool = False) -> None:
        self.stopping = True
        self._send(control.STOP, force, handoff)

    def adopt(self) -> None:
        self._send(control.ADOPT)

    def kill(self) -> None:
        raise NotImplementedError

    def _send(self, *message: Any) -> None:
        if self._conn is not None and self.alive:
            control.send(self._conn, *message)

    # -- listening -------------------------------------------------------------------------
    def _listen(self, conn: Connection) -> None:
        self._conn = conn
        self.loop.add_reader(conn.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        messages, closed = control.receive_all(conn)
        for message in messages:
            self._handle(message)
        if closed:
            self._close_pipe()
            self._pipe_closed()

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        self.last_answer = self.loop.time()
        if kind == control.PONG:
            return
        if kind == control.HELLO:
            if not self.hello.done():
                self.hello.set_result(None)
        elif kind == control.READY:
            self.ready_at = self.loop.time()
            if not self.ready.done():
                self.ready.set_result(str(message[1]))
        elif kind == control.RETIRE:
            self.on_retire(self)
        elif kind == control.EXIT:
            self._exit_code = int(message[1])
        else:
            error_log.warning("Shard %d: unknown control message %r", self.index, kind)

    def _close_pipe(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self.loop.remove_reader(conn.fileno())
            conn.close()

    def _pipe_closed(self) -> None:
        """The shard closed its end (it has ended, or is about to)."""

    def _report_gone(self) -> None:
        if not self._gone_reported:
            self._gone_reported = True
            self.on_gone(self)

    def _finish(self, code: int | None) -> None:
        if self.exited.done():
            return
        self._close_pipe()
        self._report_gone()
        self.exited.set_result(code)
        for future in (self.hello, self.ready):
            if not future.done():
                future.cancel()


class ProcessHandle(ShardHandle):
    mode = "process"

    def start(self, context: SpawnContext, sock: socket.socket) -> None:
        """Spawn the child (raises OSError when the system cannot start a process)."""
        ours, theirs = multiprocessing.Pipe(duplex=True)
        process = context.Process(
            target=process_main,
            args=(self.spec, sock, theirs),
            name=f"shardcorn-shard-{self.index}",
        )
        try:
            process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child has its own copy now
        self.process = process
        self.pid = process.pid
        self.name = f"pid {process.pid}"
        self._listen(ours)
        self.loop.add_reader(process.sentinel, self._on_sentinel)

    def _on_sentinel(self) -> None:
        self.loop.remove_reader(self.process.sentinel)
        self._on_readable()  # what it said last (READY, RETIRE) comes before its end
        self._report_gone()  # while it is a zombie: /proc still has its final CPU time
        self.process.join(_REAP_TIMEOUT)
        code = self.process.exitcode
        self._finish(code if code is not None else EXIT_STARTUP)
        self.process.close()

    def kill(self) -> None:
        if self.alive and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):  # it has just exited
                os.kill(self.pid, signal.SIGKILL)


class ThreadHandle(ShardHandle):
    mode = "thread"

    def start(self, app: ASGIApp, sock: socket.socket, store: StatsStore) -> None:
        """Start the thread; ``sock`` is the shard's own duplicate, which it closes."""
        ours, theirs = multiprocessing.Pipe(duplex=True)
        number = next(_thread_numbers)
        self.name = f"thread {number}"
        self.thread = threading.Thread(
            target=thread_main,
            args=(self.spec, app, sock, theirs, store),
            name=f"shardcorn-shard-{self.index}-{number}",
            daemon=True,  # an abandoned (hung) shard must not keep the process alive
        )
        self._listen(ours)
        self.thread.start()

    def _pipe_closed(self) -> None:
        self.thread.join(_REAP_TIMEOUT)  # it closed the pipe as its last act
        self._finish(self._exit_code if self._exit_code is not None else EXIT_STARTUP)

    def kill(self) -> None:
        """Abandon the thread: tell it to stop at once, and stop waiting for it."""
        if self.alive:
            self._send(control.STOP, True, False)
            self._finish(None)
