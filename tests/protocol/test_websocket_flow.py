"""Flow control of a WebSocket, bytes in and bytes out over an in-memory transport.

The server side is the real HttpProtocol handing over to the real WebSocketProtocol; the
client side is wsproto. The transport honours pause_reading (bytes wait in it, like in a
kernel buffer) and lets a test say when the peer stops or starts reading (pause_writing).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import pytest
from wsproto.connection import Connection as FrameConnection
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

from shardcorn.config import Config
from shardcorn.metrics.stats import ShardStats
from shardcorn.protocol.context import ShardContext
from shardcorn.protocol.http import HttpProtocol
from shardcorn.protocol.websocket import WebSocketProtocol
from shardcorn.protocol.ws_messages import State

HANDSHAKE = (
    b"GET /chat HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef") + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


class Transport(asyncio.Transport):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.protocol: Any = None
        self.output = bytearray()
        self.inbound = bytearray()
        self.reading = True
        self.closing = False
        self.lost = False

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[no-any-return]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.lost
        self.output += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.lose)

    def abort(self) -> None:
        self.close()

    def lose(self) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(None)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        self.loop.call_soon(self.deliver)

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def feed(self, data: bytes, byte_by_byte: bool = False) -> None:
        for i in range(len(data)) if byte_by_byte else [0]:
            self.inbound += data[i : i + 1] if byte_by_byte else data
            self.deliver()

    def deliver(self) -> None:
        while self.inbound and self.reading and not self.closing:
            data = bytes(self.inbound)
            self.inbound.clear()
            self.protocol.data_received(data)


class Peer:
    """The client end: wsproto frames over the transport, after a raw handshake."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: Any, **settings: Any) -> None:
        settings.setdefault("lifespan", "off")
        config = Config(app=app, **settings)
        self.loop = loop
        self.ctx = ShardContext(config, app, loop, ShardStats())
        self.transport = Transport(loop)
        http = HttpProtocol(self.ctx)
        self.transport.set_protocol(http)
        http.connection_made(self.transport)
        self.frames = FrameConnection(ConnectionType.CLIENT)
        self.read = 0

    @property
    def server(self) -> WebSocketProtocol:
        protocol = self.transport.protocol
        assert isinstance(protocol, WebSocketProtocol)
        return protocol

    def open(self, byte_by_byte: bool = False) -> None:
        self.transport.feed(HANDSHAKE, byte_by_byte)
        self.run_until(lambda: b"\r\n\r\n" in self.transport.output)
        head = bytes(self.transport.output).partition(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.read = len(head) + 4

    def send(self, event: Event, byte_by_byte: bool = False) -> None:
        self.transport.feed(self.frames.send(event), byte_by_byte)

    def events(self) -> list[Event]:
        data = bytes(self.transport.output[self.read :])
        self.read += len(data)
        self.frames.receive_data(data)
        return list(self.frames.events())

    def run_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async def wait() -> None:
            while not condition():
                await asyncio.sleep(0)

        self.loop.run_until_complete(asyncio.wait_for(wait(), timeout))

    def spin(self, iterations: int = 50) -> None:
        async def spin() -> None:
            for _ in range(iterations):
                await asyncio.sleep(0)

        self.loop.run_until_complete(spin())


class GatedApp:
    """Accepts, waits for ``gate``, then records every message until the disconnect."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.received: list[dict[str, Any]] = []
        self.done = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await self.gate.wait()
        while (message := await receive())["type"] != "websocket.disconnect":
            self.received.append(message)
        self.done = True


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_receive_queue_is_bounded(loop: asyncio.AbstractEventLoop, byte_by_byte: bool) -> None:
    app = GatedApp()
    peer = Peer(loop, app, ws_max_queue=4)
    peer.open(byte_by_byte)
    for i in range(50):
        peer.send(TextMessage(data=f"message {i}"), byte_by_byte)
    peer.spin()
    assert len(peer.server.queue) == 4
    assert not peer.transport.reading  # the rest waits in the transport, not in memory
    app.gate.set()
    peer.run_until(lambda: len(app.received) == 50)
    assert [m["text"] for m in app.received] == [f"message {i}" for i in range(50)]
    assert peer.transport.reading
    peer.send(CloseConnection(1000))
    peer.run_until(lambda: app.done)
    assert isinstance(peer.events()[-1], CloseConnection)


def test_pings_wait_while_the_queue_is_full(loop: asyncio.AbstractEventLoop) -> None:
    app = GatedApp()
    peer = Peer(loop, app, ws_max_queue=1)
    peer.open()
    peer.send(BytesMessage(data=b"one"))
    peer.send(Ping(b"p"))
    peer.spin()
    assert not any(isinstance(e, Pong) for e in peer.events())  # not read yet
    app.gate.set()
    peer.run_until(lambda: len(app.received) == 1)
    peer.run_until(lambda: any(isinstance(e, Pong) for e in peer.events()))
    peer.send(CloseConnection(1000))
    peer.run_until(lambda: app.done)


def test_send_waits_while_the_client_is_not_reading(loop: asyncio.AbstractEventLoop) -> None:
    progress: list[int] = []
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()
        for i in range(3):
            await send({"type": "websocket.send", "bytes": bytes(1000)})
            progress.append(i)
        await receive()

    peer = Peer(loop, app)
    peer.open()
    server = peer.server
    server.pause_writing()  # what the transport says when the peer's window is full
    gate.set()
    peer.spin()
    assert progress == []  # the first message is written, then send() waits
    assert len(peer.events()) == 1
    server.resume_writing()
    peer.spin()
    assert progress == [0, 1, 2]
    assert sum(len(e.data) for e in peer.events() if isinstance(e, BytesMessage)) == 2000
    peer.send(CloseConnection(1000))
    peer.run_until(lambda: peer.transport.lost)


def test_lost_connection_wakes_a_blocked_send(loop: asyncio.AbstractEventLoop) -> None:
    outcome: list[object] = []
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()
        await send({"type": "websocket.send", "text": "stuck"})
        outcome.append("woken")
        try:
            await send({"type": "websocket.send", "text": "after"})
        except OSError as exc:
            outcome.append(exc)
        outcome.append(await receive())

    peer = Peer(loop, app)
    peer.open()
    peer.server.pause_writing()
    gate.set()
    peer.spin()
    assert outcome == []
    peer.transport.abort()
    peer.run_until(lambda: len(outcome) == 3)
    assert isinstance(outcome[1], OSError)
    assert outcome[2] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    assert peer.server.state is State.CLOSED
    assert peer.ctx.connections == set()


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_echo_byte_by_byte(loop: asyncio.AbstractEventLoop, byte_by_byte: bool) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"].upper()})

    peer = Peer(loop, app)
    peer.open(byte_by_byte)
    peer.send(TextMessage(data="hé", message_finished=False), byte_by_byte)
    peer.send(TextMessage(data="llo"), byte_by_byte)
    peer.run_until(lambda: b"H" in peer.transport.output[peer.read :])
    (event,) = peer.events()
    assert isinstance(event, TextMessage) and event.data == "HÉLLO"
    peer.send(CloseConnection(1001, "done"), byte_by_byte)
    peer.run_until(lambda: peer.transport.lost)
    (close,) = peer.events()
    assert isinstance(close, CloseConnection) and close.code == 1001
