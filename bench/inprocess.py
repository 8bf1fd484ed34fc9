"""The HTTP hot path in one process, without sockets (``bench/hotpath.py`` runs this).

A real event loop (uvloop) and a server's real protocol class, fed request bytes through a
transport that only counts what it is given: what is left is the server's Python-level cost
per request, with no kernel, no load generator and no other process in the figure. That
makes it steadier than CPU-µs on a busy machine and quick to rerun after every change, and a
py-spy profile of it (``--profile``) is not skewed by samples stopped in syscalls.

The shape follows wrk's: 64 keep-alive connections, one request in flight on each; every
round gives each connection its request (a POST body in 256 KiB reads, uvloop's read size)
and lets the loop run until the responses are out.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.flatprofile import format_profile, parse_raw

_READ_SIZE = 256 * 1024
_WORKLOADS = {
    "hello": ("bench.apps:hello", None),
    "starlette": ("bench.apps:starlette", None),
    "body64k": ("bench.apps:body64k", None),
    "echo1m": ("bench.apps:echo1m", 1024 * 1024),
}


class CountingTransport(asyncio.Transport):
    """Takes whatever the protocol writes and only counts it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes += 1

    def writelines(self, list_of_data: Any) -> None:
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _shardcorn_factory(app: str, loop: asyncio.AbstractEventLoop) -> Callable[[], Any]:
    from shardcorn.config import Config
    from shardcorn.loading import load_app
    from shardcorn.metrics.stats import ShardStats
    from shardcorn.protocol.context import ShardContext
    from shardcorn.protocol.http import HttpProtocol

    config = Config(app=app, lifespan="off", log_level="warning", access_log=False)
    ctx = ShardContext(config, load_app(config), loop, ShardStats())
    return lambda: HttpProtocol(ctx)


def _uvicorn_factory(app: str, loop: asyncio.AbstractEventLoop) -> Callable[[], Any]:
    import logging

    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    config = uvicorn.Config(
        app, http="httptools", loop="uvloop", access_log=False, log_level="warning"
    )
    config.load()
    state = ServerState()
    state.default_headers = [(b"server", b"uvicorn"), (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT")]
    logging.getLogger("uvicorn.access").handlers.clear()
    return lambda: HttpToolsProtocol(config, state, {}, loop)


_FACTORIES = {"shardcorn": _shardcorn_factory, "uvicorn": _uvicorn_factory}


def request_reads(post_size: int | None) -> list[bytes]:
    """One request as the reads a server would get: a GET whole, a POST in 256 KiB pieces."""
    host = b"Host: 127.0.0.1:8000\r\n"
    if post_size is None:
        return [b"GET / HTTP/1.1\r\n" + host + b"\r\n"]
    request = (
        b"POST / HTTP/1.1\r\n" + host + b"Content-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\n\r\n" % post_size + b"x" * post_size
    )
    return [request[i : i + _READ_SIZE] for i in range(0, len(request), _READ_SIZE)]


def measure(server: str, workload: str, requests: int, repeats: int, connections: int) -> float:
    """Best-of-``repeats`` CPU µs per request of ``server``'s protocol on ``workload``."""
    import uvloop

    app, post_size = _WORKLOADS[workload]
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    factory = _FACTORIES[server](app, loop)
    pairs = []
    for _ in range(connections):
        protocol, transport = factory(), CountingTransport()
        protocol.connection_made(transport)
        pairs.append((protocol, transport))
    reads = request_reads(post_size)

    async def drive(rounds: int) -> None:
        for _ in range(rounds):
            for piece in reads:
                for protocol, _transport in pairs:
                    protocol.data_received(piece)
                await asyncio.sleep(0)  # the apps take the body, then answer
            await asyncio.sleep(0)

    rounds = max(1, requests // connections)
    loop.run_until_complete(drive(max(1, rounds // 10)))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        writes_before = sum(transport.writes for _, transport in pairs)
        started = time.process_time()
        loop.run_until_complete(drive(rounds))
        elapsed = time.process_time() - started
        answered = sum(transport.writes for _, transport in pairs) - writes_before
        if answered < rounds * connections:
            raise RuntimeError(f"{server} answered {answered} of {rounds * connections}")
        best = min(best, elapsed * 1e6 / (rounds * connections))
    loop.close()
    return best


def _profile(argv: Sequence[str], top: int) -> int:
    """Run this module under py-spy and print its flat profile."""
    if shutil.which("py-spy") is None:
        print("hotpath: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="shardcorn-hotpath-") as tmp:
        raw = Path(tmp) / "stacks.txt"
        command = [sys.executable, str(Path(__file__).with_name("hotpath.py")), *argv]
        done = subprocess.run(
            [
                *("py-spy", "record", "--rate", "1000", "--nolineno", "--format", "raw"),
                *("--output", str(raw), "--", *command),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not raw.exists():
            print(f"hotpath: py-spy failed: {done.stderr.strip()}", file=sys.stderr)
            return 1
        print(done.stdout, end="")
        print(format_profile(parse_raw(raw.read_text()), top))
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/hotpath.py",
        description="Python-level CPU µs per request of a server's protocol, in one process.",
    )
    parser.add_argument("--servers", default="shardcorn,uvicorn", help="comma-separated")
    parser.add_argument(
        "--workloads", default="hello", help="comma-separated: " + ",".join(_WORKLOADS)
    )
    parser.add_argument("--requests", type=int, default=64_000, help="per repeat, default 64000")
    parser.add_argument("--repeats", type=int, default=5, help="best of, default 5")
    parser.add_argument("--connections", type=int, default=64, help="default 64")
    parser.add_argument(
        "--profile", action="store_true", help="print a py-spy flat profile of the run"
    )
    parser.add_argument("--top", type=int, default=25, help="rows per ranking with --profile")
    args = parser.parse_args(argv)
    if args.profile:
        return _profile([a for a in argv if a != "--profile"], args.top)
    for workload in args.workloads.split(","):
        for server in args.servers.split(","):
            if workload == "echo1m":
                requests = max(args.connections, args.requests // 32)
            else:
                requests = args.requests
            us = measure(server, workload, requests, args.repeats, args.connections)
            print(f"{workload:9} {server:10} {us:9.2f} µs/request (Python, in process)")
    return 0
