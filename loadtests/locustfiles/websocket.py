"""WebSocket echo: each user holds one connection to ``/ws`` and echoes text and binary
messages through it, one at a time."""

from __future__ import annotations

from locust import constant, task

from loadtests.locustfiles.wsuser import WebSocketUser

TEXT = "hello, shardcorn"
BINARY = bytes(range(256)) * 4  # 1 KiB, every byte value, so a text/binary mix-up shows


class WebSocketEchoUser(WebSocketUser):
    wait_time = constant(0)

    @task(3)
    def echo_text(self) -> None:
        self.echo(TEXT, "/ws echo text")

    @task(1)
    def echo_binary(self) -> None:
        self.echo(BINARY, "/ws echo binary")
