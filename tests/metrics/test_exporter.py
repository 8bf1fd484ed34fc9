"""The exporter's HTTP endpoint, in this process: paths, formats, binding, closing."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from shardcorn.config import Config
from shardcorn.logs import error_log
from shardcorn.metrics.exporter import Exporter, start_exporter
from shardcorn.metrics.store import ShardTable, StatsStore
from shardcorn.shards.sockets import BindError
from tests.metrics.metrics_scraping import Scrape

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def _config(**settings: Any) -> Config:
    settings.setdefault("metrics_port", 0)
    return Config(app="shardcorn.demo:app", **settings)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    handler = _Lines()
    level = error_log.level
    error_log.addHandler(handler)
    error_log.setLevel(logging.INFO)
    yield handler.lines
    error_log.removeHandler(handler)
    error_log.setLevel(level)


@pytest.fixture
def store() -> StatsStore:
    store = StatsStore(1)
    stats = store.writer(0)
    stats.request_started(False)
    stats.request_finished("GET", 200, 0.01)
    return store


@pytest.fixture
def table() -> ShardTable:
    table = ShardTable("single", "asyncio")
    table.shard_up(0, None)
    return table


@pytest.fixture
def exporter(store: StatsStore, table: ShardTable) -> Iterator[Exporter]:
    running = start_exporter(_config(), store, table)
    assert running is not None
    yield running
    running.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        yield client


def test_off_unless_a_port_is_given(store: StatsStore, table: ShardTable) -> None:
    config = Config(app="shardcorn.demo:app")
    assert start_exporter(config, store, table) is None


def test_port_zero_is_bound_and_logged(
    store: StatsStore, table: ShardTable, log_lines: list[str], client: httpx.Client
) -> None:
    exporter = start_exporter(_config(), store, table)
    assert exporter is not None
    try:
        assert exporter.port > 0
        assert f"Metrics exporter on http://127.0.0.1:{exporter.port}/metrics" in log_lines
        assert client.get(exporter.url).status_code == 200
    finally:
        exporter.close()


def test_text_format_by_default(exporter: Exporter, client: httpx.Client) -> None:
    response = client.get(exporter.url, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    scrape = Scrape.parse(response.text)
    assert scrape.total("shardcorn_http_requests_total", method="GET", code="200") == 1
    assert int(response.headers["content-length"]) == len(response.content)


def test_openmetrics_when_asked(exporter: Exporter, client: httpx.Client) -> None:
    response = client.get(exporter.url, headers={"Accept": OPENMETRICS})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    parsed = openmetrics_families(response.text)  # type: ignore[no-untyped-call]
    families = {family.name: family for family in parsed}
    assert families["shardcorn_http_requests"].type == "counter"
    assert families["shardcorn_http_request_duration_seconds"].type == "histogram"


def test_prometheus_server_accept_header(exporter: Exporter, client: httpx.Client) -> None:
    # What Prometheus 2.x sends: OpenMetrics preferred, the text format as a fallback.
    accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    response = client.get(exporter.url, headers={"Accept": accept})
    assert response.headers["content-type"].startswith("application/openmetrics-text")


def test_gzip_when_accepted(exporter: Exporter) -> None:
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
    assert b"\r\nContent-Encoding: gzip\r\n" in head
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        response = client.get(exporter.url, headers={"Accept-Encoding": "gzip"})
        assert response.headers["content-encoding"] == "gzip"
        assert "shardcorn_shards 1.0" in response.text  # httpx decompressed it
        plain = client.get(exporter.url, headers={"Accept-Encoding": "gzip;q=0, identity"})
        assert "content-encoding" not in plain.headers


def test_only_the_metrics_path(exporter: Exporter, client: httpx.Client) -> None:
    base = f"http://127.0.0.1:{exporter.port}"
    assert client.get(base + "/metrics?name[]=x").status_code == 200
    for path in ("/", "/metrics/", "/metricsx", "/favicon.ico"):
        assert client.get(base + path).status_code == 404, path
    head = client.head(exporter.url)
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) > 0


def test_custom_path(store: StatsStore, table: ShardTable, client: httpx.Client) -> None:
    exporter = start_exporter(_config(metrics_path="/internal/stats"), store, table)
    assert exporter is not None
    try:
        assert exporter.url.endswith("/internal/stats")
        assert client.get(exporter.url).status_code == 200
        base = f"http://127.0.0.1:{exporter.port}"
        assert client.get(base + "/metrics").status_code == 404
    finally:
        exporter.close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_host(store: StatsStore, table: ShardTable, client: httpx.Client) -> None:
    exporter = start_exporter(_config(metrics_host="::1"), store, table)
    assert exporter is not None
    try:
        assert exporter.url == f"http://[::1]:{exporter.port}/metrics"
        assert client.get(exporter.url).status_code == 200
    finally:
        exporter.close()


def test_a_taken_port_is_a_bind_error(store: StatsStore, table: ShardTable) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BindError, match=rf"metrics endpoint 127\.0\.0\.1:{port}: "):
            start_exporter(_config(metrics_port=port), store, table)


def test_close_releases_the_port(store: StatsStore, table: ShardTable) -> None:
    exporter = start_exporter(_config(), store, table)
    assert exporter is not None
    port = exporter.port
    exporter.close()
    exporter.close()  # twice is fine
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # nothing listens there any more
    again_exporter = start_exporter(_config(metrics_port=port), store, table)
    assert again_exporter is not None
    again_exporter.close()


def test_a_silent_client_does_not_hold_up_a_scrape(
    exporter: Exporter, client: httpx.Client
) -> None:
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=5):
        # Connected, sends nothing: the next scrape is served anyway, at once.
        response = client.get(exporter.url, timeout=2.0)
        assert response.status_code == 200


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_an_idle_exporter_never_wakes_and_still_closes_at_once(
    exporter: Exporter, client: httpx.Client
) -> None:
    """In a single-shard server the exporter shares the GIL with the requests: between
    scrapes its thread must sleep for good (serve_forever() would wake every 0.1 s)."""
    assert client.get(exporter.url).status_code == 200
    thread_id = exporter._thread.native_id

    def switches() -> int:
        status = Path(f"/proc/self/task/{thread_id}/status").read_text()
        return int(status.split("voluntary_ctxt_switches:")[1].split()[0])

    before = switches()
    time.sleep(0.5)  # a window with nothing in it: polling would show as 5 wake-ups
    assert switches() == before
    started = time.monotonic()
    exporter.close()
    assert time.monotonic() - started < 2.0
    assert not exporter._thread.is_alive()
