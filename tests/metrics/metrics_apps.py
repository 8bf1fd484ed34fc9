"""Apps the live exporter tests serve (``--app-dir tests/metrics metrics_apps:app``)."""

from __future__ import annotations

import time
from typing import Any

from shardcorn.demo import app as demo


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The demo app, plus ``/block?s=N``: hold the shard's event loop for N seconds."""
    if scope["type"] == "http" and scope["path"] == "/block":
        # Deliberately blocking: the whole loop stops, as with a CPU-bound handler.
        time.sleep(float(scope["query_string"].decode() or "1"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"unblocked"})
        return
    await demo(scope, receive, send)
