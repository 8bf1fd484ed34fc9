"""ASGI 2 apps (``app(scope)`` returns ``instance(receive, send)``) as ASGI 3 callables."""

from __future__ import annotations

from typing import Any


class ASGI2Adapter:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        instance = self.app(scope)
        await instance(receive, send)
