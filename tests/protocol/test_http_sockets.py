"""The HTTP protocol against a real shard on 127.0.0.1: httpx, and raw sockets for the bytes
httpx would never send. Every test runs on both event loops; every recv has a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shardcorn.demo import app as demo_app
from shardcorn.metrics import stats as slots
from shardcorn.metrics.stats import StatsReader
from shardcorn.testing import ThreadServer, serve_in_thread
from tests.raw import RawClient

Message = dict[str, Any]
TIMEOUT = 5.0


@pytest.fixture
def server(loop_name: str) -> Iterator[ThreadServer]:
    with serve_in_thread(demo_app, loop=loop_name) as running:
        yield running


@pytest.fixture
def raw(server: ThreadServer) -> Iterator[RawClient]:
    client = RawClient(server.port, server.host, TIMEOUT)
    yield client
    client.close()


def stats_of(server: ThreadServer) -> StatsReader:
    """A reader over the shard's counters (the buffer under its ShardStats)."""
    return StatsReader(server.stats._ints.obj)


def test_demo_routes_with_httpx(server: ThreadServer) -> None:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        hello = client.get("/")
        assert (hello.status_code, hello.text) == (200, "Hello, world!")
        assert hello.headers["server"] == "shardcorn" and "date" in hello.headers
        assert hello.http_version == "HTTP/1.1"
        stream = client.get("/stream")
        assert stream.headers["transfer-encoding"] == "chunked"
        assert stream.text == "".join(f"chunk {i}\n" for i in range(10))
        assert client.get("/json").json()["message"] == "Hello, world!"
        assert client.get("/nope").status_code == 404
        head = client.head("/")
        assert head.headers["content-length"] == "13" and head.content == b""


def test_echo_large_and_chunked_bodies(server: ThreadServer) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: well past the flow-control high-water mark

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 100_000):
            yield body[i : i + 100_000]

    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        assert client.post("/echo", content=body).content == body
        assert client.post("/echo", content=chunks()).content == body  # chunked upload


def test_keep_alive_reuses_one_connection(server: ThreadServer) -> None:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        for _ in range(5):
            assert client.get("/").status_code == 200
    reader = stats_of(server)
    assert reader.get(slots.CONNECTIONS_ACCEPTED) == 1
    assert reader.get(slots.KEEPALIVE_REUSED) == 4


def test_concurrent_clients(server: ThreadServer) -> None:
    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            responses = await asyncio.gather(*(client.get("/sleep?ms=20") for _ in range(20)))
        return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200] * 20


def test_raw_pipelining(raw: RawClient) -> None:
    raw.send(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /json HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert raw.response().body == b"Hello, world!"
    assert raw.response().body == b"abc"
    last = raw.response()
    assert last.header(b"connection") == b"close" and b"Hello" in last.body
    raw.assert_closed()


def test_raw_http10(raw: RawClient) -> None:
    raw.send(b"GET / HTTP/1.0\r\n\r\n")
    assert raw.response().body == b"Hello, world!"
    raw.assert_closed()


def test_raw_http10_keep_alive(raw: RawClient) -> None:
    for _ in range(2):
        raw.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response = raw.response()
        assert response.header(b"connection") == b"keep-alive"


def test_raw_expect_100_continue(raw: RawClient) -> None:
    raw.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert raw.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    raw.send(b"hello")
    assert raw.response().body == b"hello"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br, chunked\r\n\r\n", 501),
        (b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 120 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n", 431),
    ],
)
def test_raw_malformed(raw: RawClient, request_bytes: bytes, status: int) -> None:
    # The server may answer and close before it has read everything.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        raw.send(request_bytes)
    response = raw.response()
    assert response.status == status
    assert response.header(b"connection") == b"close"
    raw.assert_closed()


def test_raw_malformed_one_byte_at_a_time(raw: RawClient) -> None:
    for byte in b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n":
        try:
            raw.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break  # answered and closed before the last bytes
    assert raw.response().status == 400
    raw.assert_closed()


def test_keep_alive_timeout_closes(loop_name: str) -> None:
    with serve_in_thread(demo_app, loop=loop_name, timeout_keep_alive=0.2) as server:
        raw = RawClient(server.port, server.host, TIMEOUT)
        raw.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        raw.response()
        start = time.monotonic()
        raw.assert_closed()
        assert 0.15 <= time.monotonic() - start < 3
        raw.close()


def test_limit_concurrency(loop_name: str) -> None:
    release = threading.Event()
    entered = threading.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/block":
            entered.set()
            while not release.is_set():
                await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    with serve_in_thread(app, loop=loop_name, limit_concurrency=1) as server:
        blocker = RawClient(server.port, server.host, TIMEOUT)
        blocker.send(b"GET /block HTTP/1.1\r\nHost: a\r\n\r\n")
        assert entered.wait(TIMEOUT)
        rejected = RawClient(server.port, server.host, TIMEOUT)
        rejected.send(b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n")
        response = rejected.response()
        assert response.status == 503 and response.header(b"connection") == b"close"
        rejected.assert_closed()
        release.set()
        assert blocker.response().body == b"/block"
        blocker.close()
        rejected.close()


def test_client_disconnect_reaches_the_app(loop_name: str) -> None:
    seen: list[str] = []
    done = threading.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect":
                done.set()
                return

    with serve_in_thread(app, loop=loop_name) as server:
        raw = RawClient(server.port, server.host, TIMEOUT)
        raw.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\npartial")
        deadline = time.monotonic() + TIMEOUT
        while "http.request" not in seen and time.monotonic() < deadline:
            time.sleep(0.005)
        raw.close()
        assert done.wait(TIMEOUT)
    assert seen == ["http.request", "http.disconnect"]


def test_app_exception_gives_500_and_close(loop_name: str) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raise ValueError("deliberate")

    with serve_in_thread(app, loop=loop_name) as server:
        raw = RawClient(server.port, server.host, TIMEOUT)
        raw.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        response = raw.response()
        assert response.status == 500 and response.header(b"connection") == b"close"
        raw.assert_closed()
        raw.close()


def test_starlette_app_with_sync_and_timeout_endpoints(loop_name: str) -> None:
    # Starlette runs sync endpoints in anyio's thread pool, and asyncio.wait_for needs a
    # current task on Python 3.12+: both break if the app's first step runs outside a task.
    def sync_endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("sync")

    async def timeout_endpoint(request: Request) -> PlainTextResponse:
        body = await asyncio.wait_for(request.body(), 5)
        return PlainTextResponse(b"timeout " + body)

    app = Starlette(
        routes=[Route("/sync", sync_endpoint), Route("/t", timeout_endpoint, methods=["POST"])]
    )
    with (
        serve_in_thread(app, loop=loop_name) as server,
        httpx.Client(base_url=server.url, timeout=TIMEOUT) as client,
    ):
        assert client.get("/sync").text == "sync"
        assert client.post("/t", content=b"x").text == "timeout x"


def test_graceful_shutdown_finishes_in_flight_and_closes_idle(loop_name: str) -> None:
    entered = threading.Event()
    release = threading.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            entered.set()
            while not release.is_set():
                await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done " + scope["path"].encode()})

    with serve_in_thread(app, loop=loop_name) as server:
        idle = RawClient(server.port, server.host, TIMEOUT)
        idle.send(b"GET /idle HTTP/1.1\r\nHost: a\r\n\r\n")
        assert idle.response().body == b"done /idle"
        busy = RawClient(server.port, server.host, TIMEOUT)
        busy.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        assert entered.wait(TIMEOUT)
        server.call(server.shard.stop)
        idle.assert_closed()  # the idle keep-alive connection is closed at once
        assert not busy.eof
        release.set()
        response = busy.response()
        assert response.body == b"done /slow"
        assert response.header(b"connection") == b"close"
        busy.assert_closed()
        idle.close()
        busy.close()
    assert server.exit_code == 0


def test_graceful_shutdown_cancels_after_the_timeout(loop_name: str) -> None:
    entered = threading.Event()
    outcome: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    with serve_in_thread(app, loop=loop_name, timeout_graceful_shutdown=0.2) as server:
        raw = RawClient(server.port, server.host, TIMEOUT)
        raw.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert entered.wait(TIMEOUT)
        start = time.monotonic()
        server.call(server.shard.stop)
        raw.assert_closed()
        assert 0.15 <= time.monotonic() - start < 5
        raw.close()
    assert outcome == ["cancelled"]
    assert server.exit_code == 0


def test_limit_max_requests_stops_the_shard(loop_name: str) -> None:
    with serve_in_thread(demo_app, loop=loop_name, limit_max_requests=3) as server:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            responses = [client.get("/") for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert responses[-1].headers.get("connection") == "close"
        deadline = time.monotonic() + TIMEOUT
        while server.loop.is_running() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not server.loop.is_running()
    assert server.exit_code == 0


def test_cancelled_requests_unwind_before_lifespan_shutdown(loop_name: str) -> None:
    order: list[str] = []
    entered = threading.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            order.append("lifespan shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # cleanup that takes a moment (closing a transaction)
            order.append("request cleaned up")
            raise

    with serve_in_thread(app, loop=loop_name, timeout_graceful_shutdown=0.1) as server:
        raw = RawClient(server.port, server.host, TIMEOUT)
        raw.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert entered.wait(TIMEOUT)
        server.call(server.shard.stop)
        raw.assert_closed()
        raw.close()
    assert order == ["request cleaned up", "lifespan shutdown"]
