"""Running out of file descriptors while accepting: no busy loop, one log line per interval.

Each accepted connection costs a descriptor; past RLIMIT_NOFILE (or the system's file table)
``accept()`` fails with EMFILE/ENFILE while the listening socket stays readable. The two loops
shardcorn runs on already avoid spinning on that, differently, and neither says so usefully:

* asyncio removes the listener from the selector for one second, then tries again, so new
  connections wait in the kernel's accept queue. But its accept loop does not stop at the
  error: it calls ``accept()`` up to ``backlog`` times per attempt and reports every failure to
  the loop's exception handler, which logs a traceback each time (thousands a second).
* uvloop (libuv) keeps a spare descriptor for this: it closes it, accepts the waiting
  connection, closes that at once and reopens the spare, so clients are turned away with an
  immediate close, not left hanging, and the loop never spins. Nothing is reported at all.

:class:`DescriptorWatch` makes both observable and quiet. It filters asyncio's reports out of
the loop's exception handler, and probes once a second with ``dup()`` whether this process can
open a descriptor at all (the only way to see uvloop's case). While descriptors are exhausted it
logs one warning per :data:`LOG_INTERVAL`; when they free up it logs once that accepting works
again. Serving resumes by itself on both loops; nothing here closes or pauses a listener.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
from collections.abc import Callable
from typing import Any

from shardcorn.logs import error_log

# asyncio's message for a failed accept() (selector_events.BaseSelectorEventLoop).
ASYNCIO_ACCEPT_FAILED = "socket.accept() out of system resource"
# The errors that mean "no descriptor (or no memory) for a new socket", as asyncio lists them.
EXHAUSTED_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
PROBE_INTERVAL = 1.0
LOG_INTERVAL = 10.0

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class DescriptorWatch:
    """Watches one shard loop for descriptor exhaustion; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        probe_fd: int,
        connections: Callable[[], int],
        index: int = 0,
        *,
        probe_interval: float | None = None,
        log_interval: float | None = None,
    ) -> None:
        self.loop = loop
        self.probe_fd = probe_fd  # any open descriptor: dup() of it tests for a free slot
        self.connections = connections
        self.index = index
        # The module's values are read now, not when this module was imported, so that a test
        # harness can shorten them for a whole server process.
        self.probe_interval = PROBE_INTERVAL if probe_interval is None else probe_interval
        self.log_interval = LOG_INTERVAL if log_interval is None else log_interval
        self.exhausted_since: float | None = None
        self.next_log = 0.0
        self.warnings = 0
        self._timer: asyncio.TimerHandle | None = None
        self._previous_handler: ExceptionHandler | None = None
        self._installed = False

    def start(self) -> None:
        self._previous_handler = self.loop.get_exception_handler()
        self.loop.set_exception_handler(self._exception_handler)
        self._installed = True
        self._timer = self.loop.call_later(self.probe_interval, self._probe)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._installed:
            self.loop.set_exception_handler(self._previous_handler)
            self._installed = False

    # -- detection -------------------------------------------------------------------------
    def _exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exception = context.get("exception")
        if (
            context.get("message") == ASYNCIO_ACCEPT_FAILED
            and isinstance(exception, OSError)
            and exception.errno in EXHAUSTED_ERRNOS
        ):
            self.exhausted(exception)
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def _probe(self) -> None:
        self._timer = self.loop.call_later(self.probe_interval, self._probe)
        try:
            spare = os.dup(self.probe_fd)
        except OSError as exc:
            if exc.errno in EXHAUSTED_ERRNOS:
                self.exhausted(exc)
            return
        os.close(spare)
        self.recovered()

    # -- reporting -------------------------------------------------------------------------
    def exhausted(self, exc: OSError) -> None:
        now = self.loop.time()
        if self.exhausted_since is None:
            self.exhausted_since = now
        if now < self.next_log:
            return
        self.next_log = now + self.log_interval
        self.warnings += 1
        error_log.warning(
            "Shard %d: cannot accept connections: %s (%d connections open, RLIMIT_NOFILE %d); "
            "new connections wait or are turned away until descriptors free up",
            self.index,
            exc.strerror or exc,
            self.connections(),
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )

    def recovered(self) -> None:
        since = self.exhausted_since
        if since is None:
            return
        self.exhausted_since = None
        self.next_log = 0.0
        error_log.warning(
            "Shard %d: file descriptors available again after %.1fs: accepting connections",
            self.index,
            self.loop.time() - since,
        )
