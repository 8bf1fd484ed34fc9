"""A hostile harness for every test: leaks fail the test that caused them.

Warnings are already errors (``filterwarnings = error`` in pyproject.toml; pytest turns
exceptions raised in ``__del__``, such as an unclosed socket's ResourceWarning, into warnings
too). On top of that, each test is checked after it ends for

* threads it started and left running,
* child processes it started and left running (read from ``/proc``, so no extra dependency),
* tasks left pending on an event loop it got from the ``loop`` fixture.

A leaked thread or process gets a short grace period to finish on its own (a server thread
joins, an executor worker notices its loop closed) and fails the test if it does not; a
leaked process is then killed so it cannot disturb the tests after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardcorn.logs import TRACE
from shardcorn.shards.loops import new_event_loop

# Test helpers are imported as ``tests.protocol.memory`` however pytest was started.
REPO_ROOT = str(Path(__file__).resolve().parents[1])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

LEAK_GRACE = 5.0
# Threads that belong to a library's pool and outlive the test by design, not by our leak:
# anyio keeps idle worker threads (used by Starlette's run_in_threadpool) for 10 s.
POOL_THREADS = ("AnyIO worker thread",)


def _children() -> set[int]:
    pids: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            pids.update(int(pid) for pid in children.read_text().split())
        except OSError:
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited; its parent just has not reaped it


def _wait_until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    threads_before = set(threading.enumerate())
    children_before = _children()
    yield

    def leaked_threads() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t not in threads_before and t.is_alive() and not t.name.startswith(POOL_THREADS)
        ]

    def leaked_children() -> list[int]:
        return [pid for pid in _children() - children_before if _alive(pid)]

    _wait_until(lambda: not leaked_threads() and not leaked_children(), LEAK_GRACE)
    threads = leaked_threads()
    children = leaked_children()
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    problems = []
    if threads:
        problems.append("threads left running: " + ", ".join(t.name for t in threads))
    if children:
        problems.append("child processes left running: " + ", ".join(map(str, children)))
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    """Run a test on each event loop implementation shardcorn supports."""
    return str(request.param)


@pytest.fixture
def loop(loop_name: str) -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop (asyncio or uvloop); the test fails if it leaves tasks pending."""
    event_loop = new_event_loop(loop_name)
    asyncio.set_event_loop(event_loop)
    try:
        yield event_loop
        # Let callbacks the test scheduled last (connection_lost, task wake-ups) run.
        for _ in range(20):
            event_loop.run_until_complete(asyncio.sleep(0))
        pending = [t for t in asyncio.all_tasks(event_loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            event_loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            pytest.fail(f"tasks left pending: {pending!r}")
    finally:
        event_loop.run_until_complete(event_loop.shutdown_asyncgens())
        event_loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog for shardcorn's own loggers, which do not propagate once logging is configured."""
    loggers = [logging.getLogger(name) for name in ("shardcorn.error", "shardcorn.access")]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(caplog.handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    caplog.handler.setLevel(TRACE)
    try:
        yield caplog
    finally:
        for logger, (level, propagate) in zip(loggers, saved, strict=True):
            logger.removeHandler(caplog.handler)
            logger.setLevel(level)
            logger.propagate = propagate
