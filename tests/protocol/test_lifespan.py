"""The lifespan protocol: auto/on/off, startup and shutdown, state, failures."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from shardcorn.protocol.lifespan import Lifespan, LifespanFailed
from shardcorn.testing import serve_in_thread

Message = dict[str, Any]


class LifespanApp:
    """A lifespan app scripted by its arguments; records what it received."""

    def __init__(
        self,
        startup: str = "complete",
        shutdown: str = "complete",
        raise_on: str | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.startup = startup
        self.shutdown = shutdown
        self.raise_on = raise_on
        self.state = state or {}
        self.received: list[str] = []
        self.scope: Message | None = None

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            body = repr(sorted(scope["state"].items())).encode()
            await send({"type": "http.response.body", "body": body})
            return
        assert scope["type"] == "lifespan"
        self.scope = scope
        if self.raise_on == "scope":
            raise RuntimeError("lifespan not supported here")
        message = await receive()
        self.received.append(message["type"])
        if self.raise_on == "startup":
            raise RuntimeError("startup exploded")
        scope["state"].update(self.state)
        if self.startup == "return":
            return
        await send({"type": f"lifespan.startup.{self.startup}", "message": "no database"})
        message = await receive()
        self.received.append(message["type"])
        if self.raise_on == "shutdown":
            raise RuntimeError("shutdown exploded")
        if self.shutdown == "return":
            return
        await send({"type": f"lifespan.shutdown.{self.shutdown}", "message": "flush failed"})


def run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coro, 5))


def messages(logs: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in logs.records]


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_startup_and_shutdown(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture, mode: str
) -> None:
    app = LifespanApp(state={"db": "connected"})
    state: dict[str, Any] = {}
    lifespan = Lifespan(app, mode, state)
    run(loop, lifespan.startup())
    assert state == {"db": "connected"}
    assert app.scope is not None
    assert app.scope["asgi"] == {"version": "3.0", "spec_version": "2.0"}
    assert app.scope["state"] is state
    run(loop, lifespan.shutdown())
    assert app.received == ["lifespan.startup", "lifespan.shutdown"]
    assert messages(logs) == [
        "Waiting for application startup.",
        "Application startup complete.",
        "Waiting for application shutdown.",
        "Application shutdown complete.",
    ]


def test_off_never_calls_the_app(loop: asyncio.AbstractEventLoop) -> None:
    app = LifespanApp()
    lifespan = Lifespan(app, "off", {})
    run(loop, lifespan.startup())
    run(loop, lifespan.shutdown())
    assert app.scope is None


def test_startup_failed_message(loop: asyncio.AbstractEventLoop) -> None:
    lifespan = Lifespan(LifespanApp(startup="failed"), "auto", {})
    with pytest.raises(LifespanFailed, match="no database"):
        run(loop, lifespan.startup())


@pytest.mark.parametrize("raise_on", ["scope", "startup"])
def test_auto_tolerates_apps_that_raise(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture, raise_on: str
) -> None:
    lifespan = Lifespan(LifespanApp(raise_on=raise_on), "auto", {})
    run(loop, lifespan.startup())
    assert not lifespan.supported
    run(loop, lifespan.shutdown())
    assert "ASGI 'lifespan' protocol appears unsupported." in messages(logs)
    assert not any(r.levelname == "ERROR" for r in logs.records)


def test_auto_tolerates_apps_that_return(loop: asyncio.AbstractEventLoop) -> None:
    lifespan = Lifespan(LifespanApp(startup="return"), "auto", {})
    run(loop, lifespan.startup())
    assert not lifespan.supported
    run(loop, lifespan.shutdown())


@pytest.mark.parametrize("raise_on", ["scope", "startup"])
def test_on_fails_when_the_app_raises(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture, raise_on: str
) -> None:
    lifespan = Lifespan(LifespanApp(raise_on=raise_on), "on", {})
    with pytest.raises(LifespanFailed, match="RuntimeError"):
        run(loop, lifespan.startup())
    assert "Exception in 'lifespan' protocol" in messages(logs)
    assert "Traceback" in logs.text


def test_on_fails_when_the_app_returns(loop: asyncio.AbstractEventLoop) -> None:
    lifespan = Lifespan(LifespanApp(startup="return"), "on", {})
    with pytest.raises(LifespanFailed, match="without answering"):
        run(loop, lifespan.startup())


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_shutdown_failed_is_logged(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture, mode: str
) -> None:
    lifespan = Lifespan(LifespanApp(shutdown="failed"), mode, {})
    run(loop, lifespan.startup())
    run(loop, lifespan.shutdown())
    assert "Application shutdown failed: flush failed" in messages(logs)
    assert "Application shutdown complete." not in messages(logs)


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_shutdown_exception_is_logged_not_raised(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture, mode: str
) -> None:
    lifespan = Lifespan(LifespanApp(raise_on="shutdown"), mode, {})
    run(loop, lifespan.startup())
    run(loop, lifespan.shutdown())
    assert "Exception in 'lifespan' protocol" in messages(logs)
    assert any(m.startswith("Application shutdown failed") for m in messages(logs))
    assert "Application shutdown complete." not in messages(logs)


def test_wrong_message_is_an_error(loop: asyncio.AbstractEventLoop) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.shutdown.complete"})  # out of order

    lifespan = Lifespan(app, "on", {})
    with pytest.raises(LifespanFailed, match="unexpected lifespan message"):
        run(loop, lifespan.startup())


def test_app_waiting_after_shutdown_is_cancelled_quietly(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        await receive()  # waits forever: the loop's shutdown cancels it

    lifespan = Lifespan(app, "on", {})
    run(loop, lifespan.startup())
    run(loop, lifespan.shutdown())
    # (the loop fixture cancels the leftover task; that must not log an app error)
    for task in asyncio.all_tasks(loop):
        task.cancel()
    run(loop, asyncio.sleep(0))
    assert not any(r.levelname == "ERROR" for r in logs.records)


def test_state_reaches_every_request_as_a_copy() -> None:
    app = LifespanApp(state={"db": "connected", "n": 1})
    with serve_in_thread(app, lifespan="on") as server, httpx.Client() as client:
        first = client.get(server.url + "/").text
        second = client.get(server.url + "/").text
    assert first == second == "[('db', 'connected'), ('n', 1)]"
    assert app.received == ["lifespan.startup", "lifespan.shutdown"]


def test_request_changes_to_state_do_not_leak() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["count"] = 0
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        scope["state"]["count"] += 1  # each request its own shallow copy
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % scope["state"]["count"]})

    with serve_in_thread(app) as server, httpx.Client() as client:
        assert [client.get(server.url).text for _ in range(3)] == ["1", "1", "1"]


def test_failed_startup_serves_nothing() -> None:
    app = LifespanApp(startup="failed")
    with pytest.raises(RuntimeError, match="exited at start with code 3"), serve_in_thread(app):
        pass
