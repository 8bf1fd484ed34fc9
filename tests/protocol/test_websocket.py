"""WebSockets end to end: a real server in a thread, the websockets library as the client."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from shardcorn.logs import access_log, error_log
from shardcorn.metrics import stats as slots
from shardcorn.metrics.stats import StatsReader
from shardcorn.testing import ThreadServer, serve_in_thread, serve_process

TIMEOUT = 15.0  # an upper bound only: generous, so a loaded 2-core CI box never trips it


class App:
    """A WebSocket app with one behaviour per path; it reports each finished connection."""

    def __init__(self) -> None:
        self.done: queue.Queue[tuple[str, Any]] = queue.Queue()

    def finished(self, timeout: float = TIMEOUT) -> tuple[str, Any]:
        return self.done.get(timeout=timeout)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        if scope["type"] == "http":
            body = b"no websockets here"
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        path = scope["path"].rsplit("/", 1)[-1]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        assert (await receive())["type"] == "websocket.connect"
        try:
            await getattr(self, path.replace("-", "_"))(scope, query, receive, send)
        except Exception as exc:
            self.done.put((path, exc))
            raise

    async def drain(self, path: str, receive: Any) -> None:
        """Wait for websocket.disconnect and report it."""
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.done.put((path, message))
                return

    async def echo(self, scope: dict[str, Any], query: Any, receive: Any, send: Any) -> None:
        protocols = scope["subprotocols"]
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": protocols[0] if protocols else None,
                "headers": [(b"x-app", b"yes")],
            }
        )
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.done.put(("echo", message))
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})

    async def close(self, scope: dict[str, Any], query: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        await send(
            {"type": "websocket.close", "code": int(query["code"]), "reason": query["reason"]}
        )
        await self.drain("close", receive)

    async def refuse(self, scope: dict[str, Any], query: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.close", "code": 1008})
        await self.drain("refuse", receive)

    async def deny(self, scope: dict[str, Any], query: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain"), (b"x-reason", b"token")]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"go ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"away"})
        await self.drain("deny", receive)

    async def fail_before(self, scope: dict[str, Any], query: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom before accept")

    async def fail_after(self, scope: dict[str, Any], query: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        raise RuntimeError("boom after accept")

    async def silent(self, scope: dict[str, Any], query: Any, receive: Any, send: Any) -> None:
        self.done.put(("silent", None))  # returns without accepting or closing

    async def scope(self, scope: dict[str, Any], query: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        shown = {
            key: value.decode("latin-1") if isinstance(value, bytes) else value
            for key, value in scope.items()
            if key not in ("headers", "state")
        }
        shown["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
        shown["state"] = scope["state"]
        await send({"type": "websocket.send", "text": json.dumps(shown)})
        await self.drain("scope", receive)

    async def late_send(self, scope: dict[str, Any], query: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        message = await receive()
        assert message["type"] == "websocket.disconnect"
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            self.done.put(("late_send", exc))
            raise  # the server must not log its own exception as an app error
        self.done.put(("late_send", None))


@contextmanager
def server(app: Any = None, **settings: Any) -> Iterator[ThreadServer]:
    settings.setdefault("lifespan", "off")
    with serve_in_thread(app if app is not None else App(), **settings) as running:
        yield running


def url(running: ThreadServer, path: str) -> str:
    return f"ws://127.0.0.1:{running.port}/{path}"


def ws_connect(running: ThreadServer, path: str, **options: Any) -> ClientConnection:
    options.setdefault("open_timeout", TIMEOUT)
    options.setdefault("close_timeout", TIMEOUT)
    options.setdefault("max_size", None)
    return connect(url(running, path), **options)


def refused_status(running: ThreadServer, path: str, **options: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        ws_connect(running, path, **options)
    return info.value


def closed_with(ws: ClientConnection) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=TIMEOUT)
    return info.value


def stats_of(running: ThreadServer) -> StatsReader:
    """Read the shard's counters the way the exporter does."""
    return StatsReader(running.stats.block)


def eventually(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``condition()`` holds (checked every few ms), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def assert_echo_works(running: ThreadServer) -> None:
    with ws_connect(running, "echo") as ws:
        ws.send("still here")
        assert ws.recv(timeout=TIMEOUT) == "still here"


@contextmanager
def captured(logger: logging.Logger) -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


# -- messages --------------------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["deflate", None])
def test_messages_round_trip(compression: str | None) -> None:
    app = App()
    with server(app) as running, ws_connect(running, "echo", compression=compression) as ws:
        ws.send("hello, wörld")
        assert ws.recv(timeout=TIMEOUT) == "hello, wörld"
        ws.send(b"\x00\xff binary")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\xff binary"
        ws.send("")
        assert ws.recv(timeout=TIMEOUT) == ""
        ws.send(["frag", "ment", "ed ✓"])
        assert ws.recv(timeout=TIMEOUT) == "fragmented ✓"
        ws.send([b"a" * 70000, b"b" * 10, b"c"])
        assert ws.recv(timeout=TIMEOUT) == b"a" * 70000 + b"b" * 10 + b"c"
        big = os.urandom(1 << 20)
        ws.send(big)
        assert ws.recv(timeout=TIMEOUT) == big
        text = "ü" * (1 << 19)  # 1 MiB of UTF-8
        ws.send(text)
        assert ws.recv(timeout=TIMEOUT) == text
        negotiated = ws.response.headers.get("sec-websocket-extensions")
        if compression:
            assert negotiated is not None and negotiated.startswith("permessage-deflate")
        else:
            assert negotiated is None
        ws.close()
    assert app.finished()[1]["code"] == 1000


def test_compression_can_be_turned_off() -> None:
    with (
        server(ws_per_message_deflate=False) as running,
        ws_connect(running, "echo", compression="deflate") as ws,
    ):
        assert "sec-websocket-extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=TIMEOUT) == "plain"


def test_ping_pong() -> None:
    with server() as running, ws_connect(running, "echo") as ws:
        assert ws.ping(b"are you there").wait(TIMEOUT)
        ws.send("after ping")
        assert ws.recv(timeout=TIMEOUT) == "after ping"


def test_subprotocol_and_extra_headers() -> None:
    with server() as running:
        with ws_connect(running, "echo", subprotocols=["chat", "superchat"]) as ws:
            assert ws.subprotocol == "chat"
            assert ws.response.headers["x-app"] == "yes"
            assert ws.response.headers["server"] == "shardcorn"
        with ws_connect(running, "echo") as ws:
            assert ws.subprotocol is None
            assert "sec-websocket-protocol" not in ws.response.headers


# -- closing ---------------------------------------------------------------------------------
def test_client_close_code_and_reason_reach_the_app() -> None:
    app = App()
    with server(app) as running:
        with ws_connect(running, "echo") as ws:
            ws.close(4000, "bye now")
        _, message = app.finished()
        assert message == {"type": "websocket.disconnect", "code": 4000, "reason": "bye now"}


def test_app_close_code_and_reason_reach_the_client() -> None:
    app = App()
    with server(app) as running, ws_connect(running, "close?code=4001&reason=done") as ws:
        closed = closed_with(ws)
        assert closed.rcvd is not None
        assert (closed.rcvd.code, closed.rcvd.reason) == (4001, "done")
        assert app.finished()[1]["code"] == 4001


def test_client_disappearing_is_1006() -> None:
    app = App()
    with server(app) as running, ws_connect(running, "echo") as ws:
        ws.close_socket()  # no Close frame
        assert app.finished()[1]["code"] == 1006


def test_send_after_disconnect_raises_oserror() -> None:
    app = App()
    with server(app) as running, captured(error_log) as errors:
        with ws_connect(running, "late-send") as ws:
            ws.close()
        _, exc = app.finished()
        assert isinstance(exc, OSError)
        assert_echo_works(running)
    assert not [r for r in errors if r.levelno >= logging.ERROR]


# -- refusing and failing --------------------------------------------------------------------
def test_close_before_accept_is_403() -> None:
    app = App()
    with server(app) as running:
        assert refused_status(running, "refuse").response.status_code == 403
        assert app.finished()[1]["code"] == 1008
        assert_echo_works(running)


def test_denial_response() -> None:
    with server() as running:
        response = refused_status(running, "deny").response
        assert response.status_code == 401
        assert response.body == b"go away"
        assert response.headers["x-reason"] == "token"
        assert response.headers["content-type"] == "text/plain"
        assert_echo_works(running)


def test_denial_extension_is_advertised() -> None:
    with server() as running, ws_connect(running, "scope") as ws:
        scope = json.loads(ws.recv(timeout=TIMEOUT))
    assert scope["extensions"] == {"websocket.http.response": {}}


def test_exception_before_accept_is_500_and_logged() -> None:
    with server() as running, captured(error_log) as errors:
        assert refused_status(running, "fail-before").response.status_code == 500
        assert_echo_works(running)
    (record,) = [r for r in errors if r.levelno >= logging.ERROR]
    assert record.exc_info is not None and "boom before accept" in str(record.exc_info[1])


def test_exception_after_accept_is_1011_and_logged() -> None:
    with server() as running, captured(error_log) as errors:
        with ws_connect(running, "fail-after") as ws:
            closed = closed_with(ws)
            assert closed.rcvd is not None and closed.rcvd.code == 1011
        assert_echo_works(running)
    (record,) = [r for r in errors if r.levelno >= logging.ERROR]
    assert record.exc_info is not None and "boom after accept" in str(record.exc_info[1])


def test_returning_without_an_answer_is_500() -> None:
    app = App()
    with server(app) as running, captured(error_log) as errors:
        assert refused_status(running, "silent").response.status_code == 500
        assert_echo_works(running)
    assert any("without accepting" in r.getMessage() for r in errors)


MISUSE_BEFORE_ACCEPT = {
    "send-before-accept": [{"type": "websocket.send", "text": "hi"}],
    "unoffered-subprotocol": [{"type": "websocket.accept", "subprotocol": "nope"}],
    "bad-accept-header": [{"type": "websocket.accept", "headers": [(b"x-a", b"1\r\nx-b: 2")]}],
    "reserved-accept-header": [{"type": "websocket.accept", "headers": [(b"connection", b"x")]}],
    "denial-with-1xx": [{"type": "websocket.http.response.start", "status": 101}],
    "denial-without-status": [{"type": "websocket.http.response.start"}],
    "http-message": [{"type": "http.response.start", "status": 200}],
}
MISUSE_AFTER_ACCEPT = {
    "bad-close-code": [{"type": "websocket.close", "code": 1005}],
    "text-not-str": [{"type": "websocket.send", "text": b"bytes"}],
    "both-text-and-bytes": [{"type": "websocket.send", "text": "a", "bytes": b"b"}],
    "neither-text-nor-bytes": [{"type": "websocket.send"}],
    "accept-twice": [{"type": "websocket.accept"}],
}


def scripted(messages: list[dict[str, Any]]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        for message in messages:
            await send(message)

    return app


@pytest.mark.parametrize("name", sorted(MISUSE_BEFORE_ACCEPT))
def test_app_misuse_before_accept_is_500(name: str) -> None:
    app = scripted(MISUSE_BEFORE_ACCEPT[name])
    with server(app) as running, captured(error_log) as errors:
        assert refused_status(running, "x").response.status_code == 500
    (record,) = [r for r in errors if r.levelno >= logging.ERROR]
    assert isinstance(record.exc_info[1] if record.exc_info else None, RuntimeError)


@pytest.mark.parametrize("name", sorted(MISUSE_AFTER_ACCEPT))
def test_app_misuse_after_accept_is_1011(name: str) -> None:
    app = scripted([{"type": "websocket.accept"}, *MISUSE_AFTER_ACCEPT[name]])
    with server(app) as running, captured(error_log) as errors, ws_connect(running, "x") as ws:
        closed = closed_with(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1011
    (record,) = [r for r in errors if r.levelno >= logging.ERROR]
    assert isinstance(record.exc_info[1] if record.exc_info else None, RuntimeError)


# -- the scope -------------------------------------------------------------------------------
def test_scope() -> None:
    with server(root_path="/api") as running:
        headers = {"x-custom": "1"}
        with ws_connect(
            running, "a%20b/scope?x=1", subprotocols=["p1", "p2"], additional_headers=headers
        ) as ws:
            scope = json.loads(ws.recv(timeout=TIMEOUT))
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/a b/scope"
    assert scope["raw_path"] == "/api/a%20b/scope"
    assert scope["query_string"] == "x=1"
    assert scope["subprotocols"] == ["p1", "p2"]
    assert ["x-custom", "1"] in scope["headers"]
    assert ["upgrade", "websocket"] in scope["headers"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", running.port]
    assert scope["state"] == {}
    assert "method" not in scope


def test_scheme_from_a_trusted_proxy_is_wss() -> None:
    with server() as running:
        headers = {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9"}
        with ws_connect(running, "scope", additional_headers=headers) as ws:
            scope = json.loads(ws.recv(timeout=TIMEOUT))
    assert scope["scheme"] == "wss"
    assert scope["client"] == ["203.0.113.9", 0]


# -- limits ----------------------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["deflate", None])
def test_message_over_max_size_is_1009(compression: str | None) -> None:
    with server(ws_max_size=1000) as running:
        with ws_connect(running, "echo", compression=compression) as ws:
            ws.send("x" * 1000)
            assert ws.recv(timeout=TIMEOUT) == "x" * 1000
            ws.send(b"\0" * 1001)  # compresses to a few bytes: counted after inflating
            closed = closed_with(ws)
            assert closed.rcvd is not None and closed.rcvd.code == 1009
        assert_echo_works(running)


def test_limit_concurrency_counts_websockets() -> None:
    with server(limit_concurrency=1) as running:
        with ws_connect(running, "echo") as ws:
            assert refused_status(running, "echo").response.status_code == 503
            ws.send("first still works")
            assert ws.recv(timeout=TIMEOUT) == "first still works"
        stats = stats_of(running)
        eventually(lambda: stats.get(slots.CONNECTIONS_OPEN) == 0)
        assert_echo_works(running)


# -- shutdown --------------------------------------------------------------------------------
def test_shutdown_closes_with_1001() -> None:
    app = App()
    with server(app) as running:
        with ws_connect(running, "echo") as ws:
            running.call(running.shard.stop)
            closed = closed_with(ws)
            assert closed.rcvd is not None and closed.rcvd.code == 1001
        assert app.finished()[1]["code"] == 1001
    assert running.exit_code == 0


def test_recycled_shard_closes_with_1012() -> None:
    # --limit-max-requests 1: the handshake is the shard's last request; it is replaced.
    app = App()
    with server(app, limit_max_requests=1) as running, ws_connect(running, "echo") as ws:
        closed = closed_with(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1012


def test_shutdown_does_not_wait_for_an_app_that_never_returns() -> None:
    stuck = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await stuck.wait()  # never reads, never ends

    with server(app, timeout_graceful_shutdown=0.2) as running, ws_connect(running, "x") as ws:
        running.call(running.shard.stop)
        closed = closed_with(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1001


# -- what is logged and counted --------------------------------------------------------------
def test_access_log_and_stats() -> None:
    app = App()
    with server(app, log_level="info") as running, captured(access_log) as lines:
        with ws_connect(running, "echo?q=1") as ws:
            for i in range(3):
                ws.send(f"m{i}")
                ws.recv(timeout=TIMEOUT)
        app.finished()
        refused_status(running, "refuse")
        app.finished()
        stats = stats_of(running)
        # The client has its answer as soon as it is written; the server closes just after.
        eventually(lambda: stats.get(slots.CONNECTIONS_OPEN) == 0)
        assert stats.get(slots.WEBSOCKETS_OPEN) == 0
        assert stats.get(slots.WEBSOCKET_MESSAGES_IN) == 3
        assert stats.get(slots.WEBSOCKET_MESSAGES_OUT) == 3
        assert stats.get(slots.CONNECTIONS_ACCEPTED) == 2
        assert stats.get(slots.CONNECTIONS_OPEN) == 0
        assert stats.get(slots.REQUESTS_IN_FLIGHT) == 0
        assert stats.requests() == {("GET", 101): 1, ("GET", 403): 1}
    messages = [r.getMessage() for r in lines]
    assert any(m.endswith('"GET /echo?q=1 HTTP/1.1" 101') for m in messages), messages
    assert any(m.endswith('"GET /refuse HTTP/1.1" 403') for m in messages), messages


def test_websockets_open_gauge_while_open() -> None:
    with server() as running, ws_connect(running, "echo") as ws:
        ws.send("x")
        ws.recv(timeout=TIMEOUT)
        stats = stats_of(running)
        assert stats.get(slots.WEBSOCKETS_OPEN) == 1
        assert stats.get(slots.CONNECTIONS_OPEN) == 1
        assert stats.get(slots.CONNECTIONS_ACCEPTED) == 1


# -- --ws none -------------------------------------------------------------------------------
def test_ws_none_serves_the_upgrade_as_plain_http() -> None:
    with server(ws="none") as running:
        refusal = refused_status(running, "echo")
        assert refusal.response.status_code == 404
        assert refusal.response.body == b"no websockets here"
        response = httpx.get(f"http://127.0.0.1:{running.port}/", timeout=TIMEOUT)
        assert response.status_code == 404


# -- TLS and a real process ------------------------------------------------------------------
def test_wss_scheme_over_tls(tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    with server(ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)) as running:
        address = f"wss://127.0.0.1:{running.port}/scope"
        with connect(address, ssl=context, open_timeout=TIMEOUT) as ws:
            scope = json.loads(ws.recv(timeout=TIMEOUT))
    assert scope["scheme"] == "wss"


def test_demo_echo_in_a_process_and_sigterm_closes_with_1001() -> None:
    with serve_process(["shardcorn.demo:app", "--port", "0", "--no-access-log"]) as proc:
        with connect(f"ws://127.0.0.1:{proc.port}/ws", open_timeout=TIMEOUT) as ws:
            ws.send("ping?")
            assert ws.recv(timeout=TIMEOUT) == "ping?"
            proc.send_signal(signal.SIGTERM)
            closed = closed_with(ws)
            assert closed.rcvd is not None and closed.rcvd.code == 1001
        assert proc.wait(TIMEOUT * 2) == 0


# -- a framework on top ----------------------------------------------------------------------
def test_starlette_websocket_routes() -> None:
    async def echo_json(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="json")
        async for data in websocket.iter_json():
            await websocket.send_json({"echo": data})

    async def denied(websocket: WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("teapot", status_code=418))

    async def policy(websocket: WebSocket) -> None:
        await websocket.close(code=1008)

    app = Starlette(
        routes=[
            WebSocketRoute("/json", echo_json),
            WebSocketRoute("/denied", denied),
            WebSocketRoute("/policy", policy),
        ]
    )
    with server(app) as running:
        with ws_connect(running, "json", subprotocols=["json"]) as ws:
            ws.send(json.dumps({"a": [1, 2]}))
            assert json.loads(ws.recv(timeout=TIMEOUT)) == {"echo": {"a": [1, 2]}}
        refusal = refused_status(running, "denied")
        assert (refusal.response.status_code, refusal.response.body) == (418, b"teapot")
        assert refused_status(running, "policy").response.status_code == 403
