"""The ASGI lifespan protocol, run once per shard loop.

``startup()`` starts the app with a ``lifespan`` scope and waits for it to answer
``lifespan.startup.complete`` (or ``.failed``); ``shutdown()`` does the same for shutdown.
With ``--lifespan auto`` an app that raises before answering is taken to not support
lifespan (many apps reject unknown scope types), and serving goes on without it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shardcorn.logs import error_log
from shardcorn.loading import ASGIApp


class LifespanFailed(Exception):
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
            raise LifespanFailed(message.get("message") or "lifespan startup failed")
        error_log.info("Application startup complete.")

    async def shutdown(self) -> None:
        if not self.supported or self._task is None:
            return
        error_log.info("Waiting for application shutdown.")
        if self._task.done():
            return
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        await self._inbox.put({"type": "lifespan.shutdown"})
        message = await self._wait_answer()
        if message is not None and message["type"] == "lifespan.shutdown.failed":
            error_log.error("Application shutdown failed: %s", message.get("message", ""))
            return
        error_log.info("Application shutdown complete.")
        await asyncio.wait({self._task}, timeout=1.0)

    async def _wait_answer(self) -> dict[str, Any] | None:
        assert self._answer is not None and self._task is not None
        done, _ = await asyncio.wait({self._answer, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._answer in done:
            return self._answer.result()
        # The app returned or raised without answering.
        if self._error is not None:
            if self.mode == "auto":
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
        except BaseException as exc:
            self._error = exc
            if self.mode == "on" or self._answered_startup:
                error_log.error("Exception in 'lifespan' protocol", exc_info=exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise

    _answered_startup = False

    async def _receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
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
            self._answer.set_result(message)
