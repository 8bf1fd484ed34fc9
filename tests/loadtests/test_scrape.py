"""Parsing and diffing scrapes, and waiting for a quiet server, against a stub exporter."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadtests.exporter import (
    Exporter,
    ExporterError,
    Scrape,
    counter_delta,
    label_deltas,
    moved_counters,
)

TEXT = """\
# TYPE shardcorn_http_requests counter
shardcorn_http_requests_total{shard="0",method="GET",code="200"} 10
shardcorn_http_requests_total{shard="1",method="GET",code="200"} 5
shardcorn_http_requests_total{shard="1",method="POST",code="404"} 1
# TYPE shardcorn_connections_accepted counter
shardcorn_connections_accepted_total{shard="0"} 3
# TYPE shardcorn_http_requests_in_flight gauge
shardcorn_http_requests_in_flight{shard="0"} 0
shardcorn_http_requests_in_flight{shard="1"} 2
"""


def test_sums_and_labels() -> None:
    s = Scrape.parse(TEXT)
    assert s.total("shardcorn_http_requests_total") == 16
    assert s.by_label("shardcorn_http_requests_total", "code") == {"200": 15, "404": 1}
    assert s.total("shardcorn_http_requests_in_flight") == 2
    assert s.has("shardcorn_connections_accepted_total")
    assert not s.has("shardcorn_websocket_messages_total")


def test_deltas() -> None:
    before = Scrape.parse(TEXT)
    after = Scrape.parse(TEXT.replace("} 10", "} 30").replace("} 3\n", "} 4\n"))
    assert label_deltas(before, after, "shardcorn_http_requests_total", "shard") == {"0": 20}
    assert moved_counters(before, after, skip=("shardcorn_http_requests_total",)) == {
        "shardcorn_connections_accepted_total": 1
    }
    with pytest.raises(ExporterError):
        counter_delta(1.0, 1.5)


class _Stub:
    """An exporter stub whose in-flight gauge counts down once per scrape."""

    def __init__(self, in_flight: int) -> None:
        self.in_flight = in_flight
        self.scrapes = 0

    def body(self) -> bytes:
        self.scrapes += 1
        gauge = max(self.in_flight - self.scrapes, 0)
        return (
            "# TYPE shardcorn_http_requests_in_flight gauge\n"
            f'shardcorn_http_requests_in_flight{{shard="0"}} {gauge}\n'
            "# TYPE shardcorn_http_requests counter\n"
            f'shardcorn_http_requests_total{{shard="0",method="GET",code="200"}} {10 - gauge}\n'
        ).encode()


@pytest.fixture
def stub() -> Iterator[tuple[_Stub, str]]:
    state = _Stub(in_flight=3)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state.body()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_wait_quiet_returns_once_nothing_moves(stub: tuple[_Stub, str]) -> None:
    state, url = stub
    with Exporter(url) as exporter:
        quiet = exporter.wait_quiet(timeout=5, interval=0.01)
    assert quiet.total("shardcorn_http_requests_in_flight") == 0
    assert quiet.total("shardcorn_http_requests_total") == 10
    # in flight 2, 1, then 0 twice in a row with the counter unchanged
    assert state.scrapes == 4


def test_wait_quiet_gives_up(stub: tuple[_Stub, str]) -> None:
    state, url = stub
    state.in_flight = 10**9
    with Exporter(url) as exporter, pytest.raises(ExporterError, match="not quiet"):
        exporter.wait_quiet(timeout=0.2, interval=0.01)


def test_scrape_of_nothing_is_an_error() -> None:
    with (
        Exporter("http://127.0.0.1:9/metrics", timeout=1) as exporter,
        pytest.raises(ExporterError),
    ):
        exporter.scrape()
