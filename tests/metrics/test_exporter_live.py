"""A real ``python -m shardcorn`` with ``--metrics-port 0``: known traffic in, exact counts out.

These check the protocol's bookkeeping as much as the exporter: every count below is what a
known sequence of requests, refusals and timeouts must produce, to the unit.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect as ws_connect

from shardcorn.testing import serve_process
from tests.metrics.metrics_scraping import (
    Scrape,
    raw_request,
    scrape,
    serve_with_metrics,
    wait_closed_by_peer,
    wait_for,
)

APPS = str(Path(__file__).resolve().parent)
GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_exact_requests_and_limit_rejections() -> None:
    n, k = 20, 5
    with serve_with_metrics("shardcorn.demo:app", "--limit-concurrency", "1") as (server, url):
        # One idle connection fills the limit of 1: every request on another is refused.
        with _connect(server.port):
            wait_for(url, lambda s: s.total("shardcorn_connections_open") == 1, "the idle one")
            for _ in range(k):
                with _connect(server.port) as refused:
                    answer = raw_request(refused, GET)
                    assert answer.startswith(b"HTTP/1.1 503 "), answer
                    wait_closed_by_peer(refused)
        wait_for(url, lambda s: s.total("shardcorn_connections_open") == 0, "no connections")
        with httpx.Client(base_url=server.url, timeout=5.0, trust_env=False) as client:
            for _ in range(n):
                assert client.get("/").status_code == 200
            assert client.post("/echo", content=b"x" * 100).status_code == 200
            assert client.request("PURGE", "/").status_code == 200  # an unknown method
            assert client.get("/missing").status_code == 404
        served = n + 3

        s = wait_for(
            url,
            lambda s: s.total("shardcorn_http_request_duration_seconds_count") == served,
            f"{served} requests",
        )
        assert s.by("shardcorn_http_requests_total", "method") == {
            "GET": n + 1,
            "POST": 1,
            "OTHER": 1,
        }
        assert s.total("shardcorn_http_requests_total", method="GET", code="200") == n
        assert s.total("shardcorn_http_requests_total", code="404") == 1
        # 503s from the limit are not requests the app answered: they are counted apart.
        assert s.total("shardcorn_http_requests_total", code="503") == 0
        assert s.total("shardcorn_concurrency_rejected_total") == k
        assert s.by("shardcorn_bad_requests_total", "code") == {"503": k}
        assert s.total("shardcorn_concurrency_limit") == 1
        # The idle one, the k refused, the httpx client's one connection.
        assert s.total("shardcorn_connections_accepted_total") == 1 + k + 1
        assert s.total("shardcorn_keepalive_reused_requests_total") == served - 1
        assert s.total("shardcorn_http_requests_in_flight") == 0
        assert s.total("shardcorn_keepalive_timeouts_total") == 0
        assert scrape(url).total("shardcorn_http_requests_total") == served  # it stays put


def test_exact_keepalive_timeouts() -> None:
    m = 4
    with serve_with_metrics("shardcorn.demo:app", "--timeout-keep-alive", "0.5") as (
        server,
        url,
    ):
        clients = [_connect(server.port) for _ in range(m)]
        never_asked = _connect(server.port)  # idles out too, but had no request to keep alive
        try:
            for sock in clients:
                assert raw_request(sock, GET).startswith(b"HTTP/1.1 200 ")
            for sock in [*clients, never_asked]:
                wait_closed_by_peer(sock)
        finally:
            for sock in [*clients, never_asked]:
                sock.close()
        s = wait_for(
            url,
            lambda s: s.total("shardcorn_connections_open") == 0,
            "every connection closed",
        )
        assert s.total("shardcorn_keepalive_timeouts_total") == m
        assert s.total("shardcorn_keepalive_idle_connections") == 0
        assert s.total("shardcorn_http_requests_total") == m
        assert s.total("shardcorn_connections_accepted_total") == m + 1


def test_gauges_follow_connections_and_requests() -> None:
    with serve_with_metrics("shardcorn.demo:app") as (server, url):
        clients = [_connect(server.port) for _ in range(3)]
        try:
            for sock in clients:
                assert raw_request(sock, GET).startswith(b"HTTP/1.1 200 ")
            wait_for(
                url,
                lambda s: (
                    s.total("shardcorn_keepalive_idle_connections") == 3
                    and s.total("shardcorn_connections_open") == 3
                ),
                "three idle keep-alive connections",
            )
            for sock in clients:
                assert raw_request(sock, GET).startswith(b"HTTP/1.1 200 ")
            s = wait_for(
                url,
                lambda s: s.total("shardcorn_http_requests_total") == 6,
                "six requests",
            )
            assert s.total("shardcorn_keepalive_reused_requests_total") == 3
            slow = clients[0]
            slow.sendall(b"GET /sleep?ms=800 HTTP/1.1\r\nHost: test\r\n\r\n")
            s = wait_for(
                url,
                lambda s: s.total("shardcorn_http_requests_in_flight") == 1,
                "one request in flight",
            )
            assert s.total("shardcorn_keepalive_idle_connections") == 2
            assert raw_request(slow, b"").startswith(b"HTTP/1.1 200 ")
        finally:
            for sock in clients:
                sock.close()
        s = wait_for(
            url,
            lambda s: s.total("shardcorn_connections_open") == 0,
            "every connection closed",
        )
        assert s.total("shardcorn_keepalive_idle_connections") == 0
        assert s.total("shardcorn_http_requests_in_flight") == 0
        assert s.total("shardcorn_http_request_duration_seconds_bucket", le="0.5") == 6
        assert s.total("shardcorn_http_request_duration_seconds_bucket", le="1.0") == 7


def test_pipelined_requests_one_new_the_rest_reused() -> None:
    with serve_with_metrics("shardcorn.demo:app") as (server, url), _connect(server.port) as sock:
        sock.sendall(GET * 3)
        received = b""
        while received.count(b"Hello, world!") < 3:
            chunk = sock.recv(65536)
            assert chunk, "closed early"
            received += chunk
        s = wait_for(url, lambda s: s.total("shardcorn_http_requests_total") == 3, "3 requests")
        assert s.total("shardcorn_keepalive_reused_requests_total") == 2


def test_protocol_errors_by_code() -> None:
    with serve_with_metrics("shardcorn.demo:app") as (server, url):
        cases = {
            b"NOT HTTP AT ALL\r\n\r\n": b"400",
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: test\r\n\r\n": b"414",
            b"GET / HTTP/1.1\r\n\r\n": b"400",  # no Host
        }
        for request, code in cases.items():
            with _connect(server.port) as sock:
                answer = raw_request(sock, request)
                assert answer.split(b" ")[1] == code, answer[:80]
        s = wait_for(url, lambda s: s.total("shardcorn_bad_requests_total") == 3, "three refusals")
        assert s.by("shardcorn_bad_requests_total", "code") == {"400": 2, "414": 1}
        assert s.total("shardcorn_http_requests_total") == 0
        assert s.total("shardcorn_concurrency_rejected_total") == 0


def test_single_mode_describes_itself() -> None:
    with serve_with_metrics("shardcorn.demo:app", "--loop", "asyncio") as (_, url):
        s = scrape(url)
        assert s.total("shardcorn_shards") == 1
        (info,) = s.matching("shardcorn_build_info")
        assert info.labels["mode"] == "single"
        assert info.labels["loop"] == "asyncio"
        assert s.total("shardcorn_shard_resident_memory_bytes", shard="0") > 10_000_000
        assert s.total("shardcorn_shard_cpu_seconds_total", shard="0") > 0
        assert s.total("shardcorn_concurrency_limit") == 0
        assert s.total("shardcorn_shard_restarts_total") == 0


def test_a_scrape_does_not_wait_for_a_blocked_shard() -> None:
    with serve_with_metrics("--app-dir", APPS, "metrics_apps:app") as (server, url):
        done: list[int] = []

        def blocked_request() -> None:
            with httpx.Client(timeout=10.0, trust_env=False) as client:
                done.append(client.get(server.url + "/block?2").status_code)

        thread = threading.Thread(target=blocked_request)
        thread.start()
        try:
            # The shard's loop is stuck in the app for 2 s; the exporter answers meanwhile.
            start = time.monotonic()
            s = wait_for(
                url,
                lambda s: s.total("shardcorn_http_requests_in_flight") == 1,
                "the blocking request in flight",
            )
            assert not done, "the request finished before the scrape saw it"
            assert time.monotonic() - start < 2.0
            assert s.total("shardcorn_http_requests_total") == 0
        finally:
            thread.join(15)
        assert done == [200]


def test_metrics_port_taken_is_a_startup_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["shardcorn.demo:app", "--port", "0", "--metrics-port", str(port)]
        with serve_process(args, ready=False) as server:
            assert server.wait(20) == 1
        assert f"cannot bind the metrics endpoint 127.0.0.1:{port}" in server.log
        assert "Traceback" not in server.log


def test_scrape_parses_as_the_two_formats_agree() -> None:
    with serve_with_metrics("shardcorn.demo:app") as (server, url):
        httpx.get(server.url + "/", timeout=5.0, trust_env=False)
        wait_for(url, lambda s: s.total("shardcorn_http_requests_total") == 1, "one request")
        text = scrape(url)
        response = httpx.get(
            url,
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            timeout=5.0,
            trust_env=False,
        )
        assert response.text.endswith("# EOF\n")
        assert _counters(text) == _counters(Scrape.parse(response.text.replace("# EOF\n", "")))


def _counters(s: Scrape) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    skip = ("shardcorn_shard_cpu_seconds_total", "shardcorn_shard_resident_memory_bytes")
    return {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for x in s.samples
        if x.name.endswith("_total") and x.name not in skip
    }


def test_websocket_counts() -> None:
    with serve_with_metrics("shardcorn.demo:app") as (server, url):
        with ws_connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5) as ws:
            for i in range(3):
                ws.send(f"message {i}")
                assert ws.recv(timeout=5) == f"message {i}"
            ws.send(b"bytes too")
            assert ws.recv(timeout=5) == b"bytes too"
            s = wait_for(
                url,
                lambda s: s.total("shardcorn_websocket_connections_open") == 1,
                "one open WebSocket",
            )
            assert s.total("shardcorn_connections_open") == 1
            assert s.total("shardcorn_http_requests_total", code="101") == 1
            assert s.by("shardcorn_websocket_messages_total", "direction") == {
                "received": 4,
                "sent": 4,
            }
        s = wait_for(
            url,
            lambda s: s.total("shardcorn_connections_open") == 0,
            "the WebSocket closed",
        )
        assert s.total("shardcorn_websocket_connections_open") == 0
        assert s.total("shardcorn_connections_accepted_total") == 1
        assert s.total("shardcorn_http_requests_total") == 1
