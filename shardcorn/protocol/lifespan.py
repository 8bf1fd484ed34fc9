"""The ASGI lifespan protocol, run once per shard loop.

``startup()`` starts the app with a ``lifespan`` scope and waits for it to answer
``lifespan.startup.complete`` (or ``.failed``); ``shutdown()`` does the same for shutdown.
With ``--lifespan auto`` an app that raises before answering is taken to not support
lifespan (many apps reject unknown scope types), and serving goes on without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from shardcorn.loading import ASGIApp
from shardcorn.logs import error_log


class LifespanFailed(Exception):  # noqa: N818 - named for the event, like the ASGI message
    """Startup or shutdown failed; the message is the app's, or the exception it raised."""


class Lifespan:
    def __init__(self, app: ASGIApp, mode: str, state: dict[str, Any]) -> None:
        self.app = app
        self.mode = mode  # "auto" | "on" | "off"
        self.state = state
        self.supported = mode != "off"
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._answer: asyncio.Future[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def startup(self) -> None:
        if not self.supported:
            return
        error_log.info("Waiting for application startup.")
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        self._task = loop.create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        message = await self._wait_answer()
        if message is None:
            return  # the app does not do lifespan (auto)
        if message["type"] == "lifespan.startup.failed":
            await self._end_task()
            raise LifespanFailed(message.get("message") or "lifespan startup failed")
        error_log.info("Application startup complete.")

    async def shutdown(self) -> None:
        task = self._task
        if not self.supported or task is None or task.done():
            return  # no lifespan, or the app already ended it
        error_log.info("Waiting for application shutdown.")
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            message = await self._wait_answer()
        except LifespanFailed as exc:
            error_log.error("Application shutdown failed: %s", exc)
            return
        if message is None:
            return  # the app returned without answering (auto): nothing to report
        if message["type"] == "lifespan.shutdown.failed":
            error_log.error("Application shutdown failed: %s", message.get("message", ""))
            return
        error_log.info("Application shutdown complete.")
        # Let the app's code after its answer run, within reason.
        await asyncio.wait({task}, timeout=1.0)
        await self._end_task()

    async def _end_task(self) -> None:
        """Cancel the app's lifespan call if it is still waiting, and wait for it to end."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    async def _wait_answer(self) -> dict[str, Any] | None:
        answer, task = self._answer, self._task
        assert answer is not None and task is not None
        waiters: set[asyncio.Future[Any]] = {answer, task}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if answer.done():
            message: dict[str, Any] = answer.result()
            return message
        # The app returned or raised without answering.
        if self._error is not None:
            if self.mode == "auto" and not self._answered_startup:
                self.supported = False
                error_log.info("ASGI 'lifespan' protocol appears unsupported.")
                return None
            raise LifespanFailed(f"{type(self._error).__name__}: {self._error}")
        if self.mode == "on":
            raise LifespanFailed("the app returned without answering the lifespan message")
        self.supported = False
        return None

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except (asyncio.CancelledError, GeneratorExit):
            raise  # the loop is closing down, not an error of the app
        except BaseException as exc:
            self._error = exc
            if self.mode == "on" or self._answered_startup:
                error_log.error("Exception in 'lifespan' protocol", exc_info=exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise

    _answered_startup = False

    async def _receive(self) -> MutableMapping[str, Any]:
        return await self._inbox.get()

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        expected = (
            ("lifespan.startup.complete", "lifespan.startup.failed")
            if not self._answered_startup
            else ("lifespan.shutdown.complete", "lifespan.shutdown.failed")
        )
        if kind not in expected:
            raise RuntimeError(f"unexpected lifespan message {kind!r}")
        self._answered_startup = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(dict(message))
