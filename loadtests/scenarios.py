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
    # Started with --limit-concurrency N: 503s marked REJECTED_BY_DESIGN are expected, and
    # must equal the exporter's rejections.
    limit_concurrency: int | None = None
    # Has WebSocket users, so the exporter's message counters are checked too.
    uses_websocket: bool = False
    # Every request asks for Connection: close, so each one is a connection of its own.
    connection_per_request: bool = False

    @property
    def locustfile_path(self) -> Path:
        return LOCUSTFILES / self.locustfile

    @property
    def server_args(self) -> tuple[str, ...]:
        """Appended to the server's command line, after the runner's own options."""
        if self.limit_concurrency is None:
            return ()
        return ("--limit-concurrency", str(self.limit_concurrency))

    @property
    def expects_rejections(self) -> bool:
        return self.limit_concurrency is not None

    def min_users(self, shards: int) -> int:
        """The fewest users that are sure to go over the limit.

        shardcorn's limit is per shard and counts connections too, and each user holds one
        connection. The kernel may spread ``shards * limit`` connections evenly, leaving every
        shard exactly at its limit and never over it; one user more and, by pigeonhole, some
        shard has more connections than its limit allows.
        """
        if self.limit_concurrency is None:
            return 1
        return shards * self.limit_concurrency + 1


# The limit scenario's cap, per shard. Two requests in flight at once, against users that each
# hold a request for 50 ms with no pause between requests, keeps the server at its cap for the
# whole run: most requests are turned away and some are served, so both paths are counted.
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
            limit_concurrency=LIMIT_CONCURRENCY,
        ),
    )
}
