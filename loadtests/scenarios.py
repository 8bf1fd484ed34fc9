"""The scenarios the runner knows: which locustfile, which users, which server options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOCUSTFILES = Path(__file__).resolve().parent / "locustfiles"


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    locustfile: str
    # Locust user classes to run; empty means every user class in the locustfile.
    user_classes: tuple[str, ...] = ()
    # Appended to the server's command line (after the runner's own options).
    server_args: tuple[str, ...] = ()
    # 503s marked REJECTED_BY_DESIGN are expected, and must equal the exporter's rejections.
    expects_rejections: bool = False
    # Has WebSocket users, so the exporter's message counters are checked too.
    uses_websocket: bool = False
    # Every request asks for Connection: close, so each one is a connection of its own.
    connection_per_request: bool = False

    @property
    def locustfile_path(self) -> Path:
        return LOCUSTFILES / self.locustfile


# The limit scenario's cap. Two requests in flight at once, against users that each hold a
# request for 50 ms with no pause between requests, keeps the server at its cap for the whole
# run: most requests are turned away and some are served, so both paths are counted.
LIMIT_CONCURRENCY = 2

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("hello", "GET / (text), kept-alive connections", "hello.py"),
        Scenario("json", "GET /json, parsed and type-checked", "json_api.py"),
        Scenario("upload", "POST 1/16/128 KiB bodies to /echo, echo verified", "upload.py"),
        Scenario("stream", "GET /stream, a chunked response read to the end", "stream.py"),
        Scenario(
            "keepalive",
            "GET / over kept-alive connections next to Connection: close churn",
            "keepalive.py",
        ),
        Scenario(
            "churn",
            "GET / with Connection: close: one TCP connection per request",
            "keepalive.py",
            user_classes=("ConnectionCloseUser",),
            connection_per_request=True,
        ),
        Scenario(
            "websocket",
            "WebSocket echo on /ws (text and binary), one connection per user",
            "websocket.py",
            uses_websocket=True,
        ),
        Scenario(
            "mixed",
            "hello, json, upload, stream and WebSocket users together, weighted",
            "mixed.py",
            uses_websocket=True,
        ),
        Scenario(
            "limit",
            f"GET /sleep?ms=50 with --limit-concurrency {LIMIT_CONCURRENCY}: 503s by design",
            "limit.py",
            server_args=("--limit-concurrency", str(LIMIT_CONCURRENCY)),
            expects_rejections=True,
        ),
    )
}
