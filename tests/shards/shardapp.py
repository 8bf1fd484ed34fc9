"""The app the shard tests serve (imported by the shards themselves, in process mode).

* ``/who``: which shard answered: process id, serving thread, and the token this shard's own
  lifespan startup put in its state (one per shard loop).
* ``/sleep?ms=N&id=K``: writes ``sleep-start K`` to stderr when it begins (so a test knows
  the request is in flight), sleeps N ms, answers 200.
* ``/block?s=N``: blocks the shard's event loop for N seconds (a hung shard).

Environment, read at import: ``SHARDAPP_LIFESPAN_FAIL=1`` fails lifespan startup;
``SHARDAPP_CRASH_FILE=path`` makes the import die (``os._exit(9)``) while that file exists.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

_crash_file = os.environ.get("SHARDAPP_CRASH_FILE")
if _crash_file and os.path.exists(_crash_file):
    os._exit(9)

LIFESPAN_FAIL = os.environ.get("SHARDAPP_LIFESPAN_FAIL") == "1"


async def _lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if LIFESPAN_FAIL:
                await send({"type": "lifespan.startup.failed", "message": "told to fail"})
                return
            scope["state"]["token"] = uuid.uuid4().hex
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send: Any, body: bytes, content_type: bytes = b"text/plain") -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]}
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode("latin-1"))
    if path == "/who":
        who = {
            "pid": os.getpid(),
            "thread": threading.get_ident(),
            "token": scope.get("state", {}).get("token"),
        }
        await _respond(send, json.dumps(who).encode(), b"application/json")
    elif path == "/sleep":
        sys.stderr.write(f"sleep-start {query.get('id', ['-'])[0]}\n")
        sys.stderr.flush()
        await asyncio.sleep(float(query.get("ms", ["100"])[0]) / 1000)
        await _respond(send, b"slept")
    elif path == "/block":
        time.sleep(float(query.get("s", ["1"])[0]))  # on purpose: the loop stops answering
        await _respond(send, b"unblocked")
    else:
        await _respond(send, b"hello")
