"""Scraping a live exporter in tests: find its URL in the log, scrape, parse, wait for values.

Counts are waited for, never slept for: a shard bumps a counter just after it writes the
response, so a client can read its answer a moment before the scrape would show it.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shardcorn.testing import ProcessServer, serve_process

METRICS_LINE = re.compile(r"Metrics exporter on (http://\S+)")

# The exporter's interface (dashboards and alerts are built on it): every family, as the
# parser names it, with its type and labels.
INTERFACE: dict[str, tuple[str, frozenset[str]]] = {
    "shardcorn_http_requests": ("counter", frozenset({"shard", "method", "code"})),
    "shardcorn_http_request_duration_seconds": ("histogram", frozenset({"shard"})),
    "shardcorn_http_requests_in_flight": ("gauge", frozenset({"shard"})),
    "shardcorn_connections_open": ("gauge", frozenset({"shard"})),
    "shardcorn_connections_accepted": ("counter", frozenset({"shard"})),
    "shardcorn_concurrency_limit": ("gauge", frozenset()),
    "shardcorn_concurrency_rejected": ("counter", frozenset({"shard"})),
    "shardcorn_keepalive_idle_connections": ("gauge", frozenset({"shard"})),
    "shardcorn_keepalive_reused_requests": ("counter", frozenset({"shard"})),
    "shardcorn_keepalive_timeouts": ("counter", frozenset({"shard"})),
    "shardcorn_bad_requests": ("counter", frozenset({"shard", "code"})),
    "shardcorn_websocket_connections_open": ("gauge", frozenset({"shard"})),
    "shardcorn_websocket_messages": ("counter", frozenset({"shard", "direction"})),
    "shardcorn_shards": ("gauge", frozenset()),
    "shardcorn_shard_restarts": ("counter", frozenset({"shard", "reason"})),
    "shardcorn_shard_resident_memory_bytes": ("gauge", frozenset({"shard"})),
    "shardcorn_shard_cpu_seconds": ("counter", frozenset({"shard"})),
    "shardcorn_build_info": ("gauge", frozenset({"version", "python", "loop", "mode"})),
}


@dataclass(frozen=True)
class Sample:
    family: str
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """One parsed scrape: the families (name -> type) and every sample."""

    text: str
    types: Mapping[str, str]
    samples: tuple[Sample, ...]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        families = list(text_string_to_metric_families(text))
        return cls(
            text,
            {family.name: family.type for family in families},
            tuple(
                Sample(family.name, s.name, dict(s.labels), float(s.value))
                for family in families
                for s in family.samples
            ),
        )

    def matching(self, name: str, **labels: str) -> list[Sample]:
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def total(self, name: str, **labels: str) -> float:
        """The sum of ``name`` over every sample whose labels include ``labels``."""
        return sum(s.value for s in self.matching(name, **labels))

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.matching(name):
            out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
        return out


def scrape(url: str, headers: Mapping[str, str] | None = None) -> Scrape:
    response = httpx.get(url, headers=dict(headers or {}), timeout=5.0, trust_env=False)
    assert response.status_code == 200, (response.status_code, response.text)
    return Scrape.parse(response.text)


def wait_for(
    url: str, condition: Callable[[Scrape], bool], what: str, timeout: float = 10.0
) -> Scrape:
    """Scrape until ``condition`` holds; fail with the last scrape after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        current = scrape(url)
        if condition(current):
            return current
        if time.monotonic() >= deadline:
            shown = "\n".join(line for line in current.text.splitlines() if line and line[0] != "#")
            raise AssertionError(f"waited {timeout:g}s for {what}; last scrape:\n{shown}")
        time.sleep(0.05)


def metrics_url(server: ProcessServer) -> str:
    """The exporter's URL, from the server's log (it is logged before "running on")."""
    match = METRICS_LINE.search(server.read_until(METRICS_LINE.pattern))
    assert match is not None
    return match.group(1)


@contextmanager
def serve_with_metrics(*args: str) -> Iterator[tuple[ProcessServer, str]]:
    """A real ``python -m shardcorn`` with an exporter on a free port: (server, metrics URL)."""
    with serve_process(
        ["--port", "0", "--metrics-port", "0", "--log-level", "info", *args]
    ) as server:
        yield server, metrics_url(server)


def raw_request(sock: socket.socket, request: bytes, timeout: float = 5.0) -> bytes:
    """Send one request and read one response head plus a Content-Length body."""
    sock.settimeout(timeout)
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def wait_closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> None:
    """Wait until the server closes ``sock`` (EOF); fail after ``timeout`` s."""
    sock.settimeout(timeout)
    # A reset is a close too: the server closed with bytes of ours still unread.
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(1) == b"", "the server sent bytes instead of closing"
