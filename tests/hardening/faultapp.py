"""The app the fault tests serve in real server processes.

* ``/pid``: the serving process id.
* ``/sleep?ms=N``: says ``sleep-start <pid>`` on stderr (so a test knows it is in flight and
  where), sleeps N ms, answers its process id.
* ``/hang``: never answers (for --timeout-response).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any
from urllib.parse import parse_qs


async def _answer(send: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/sleep":
        query = parse_qs(scope["query_string"].decode("latin-1"))
        sys.stderr.write(f"sleep-start {os.getpid()}\n")
        sys.stderr.flush()
        await asyncio.sleep(float(query.get("ms", ["100"])[0]) / 1000)
    elif path == "/hang":
        await asyncio.Event().wait()
    await _answer(send, str(os.getpid()).encode())
