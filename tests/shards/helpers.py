"""Starting a sharded shardcorn on ``shardapp`` for the shard tests, and reading its log."""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from shardcorn.testing import ProcessServer, serve_process

HERE = str(Path(__file__).resolve().parent)


def shard_args(mode: str, *extra: str, shards: int = 2) -> list[str]:
    return [
        "shardapp:app",
        "--app-dir",
        HERE,
        "--port",
        "0",
        "--shards",
        str(shards),
        "--shard-mode",
        mode,
        "--no-access-log",
        *extra,
    ]


@contextmanager
def serve_shards(
    mode: str,
    *extra: str,
    shards: int = 2,
    env: dict[str, str] | None = None,
    ready: bool = True,
    timeout: float = 30.0,
) -> Iterator[ProcessServer]:
    with serve_process(
        shard_args(mode, *extra, shards=shards), env=env, ready=ready, timeout=timeout
    ) as server:
        yield server


def log_lines(
    server: ProcessServer, pattern: str, count: int = 1, timeout: float = 20.0
) -> list[str]:
    """Read the server's log until ``count`` lines match ``pattern``; return them."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in server.output if regex.search(line)]
        if len(found) >= count:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0 or server._read_line(time.monotonic() + remaining) is None:
            raise TimeoutError(
                f"wanted {count} log line(s) matching {pattern!r}, got {len(found)}; log:\n"
                + server.log
            )


def get(server: ProcessServer, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def who(server: ProcessServer) -> dict[str, int | str]:
    status, body = get(server, "/who")
    assert status == 200, body
    answer: dict[str, int | str] = json.loads(body)
    return answer


def shard_tokens(server: ProcessServer, requests: int = 200) -> set[str]:
    """The shards (lifespan tokens) that answer ``requests`` fresh connections."""
    return {str(who(server)["token"]) for _ in range(requests)}


def spread(server: ProcessServer, connections: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _ in range(connections):
        token = str(who(server)["token"])
        counts[token] = counts.get(token, 0) + 1
    return counts


def ids(values: Sequence[str]) -> str:
    return ",".join(values)
