"""Prometheus's own tools against a live shardcorn: ``promtool check metrics`` on a scrape, and
a real Prometheus server scraping the exporter and answering a query through its HTTP API.

Both need the Debian ``prometheus`` package (``scripts/ci-system-deps.sh`` installs it); they
skip only when its binaries are missing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from shardcorn.testing import stop_process
from tests.metrics.metrics_examples import dashboard_queries
from tests.metrics.metrics_scraping import serve_with_metrics, wait_for

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


def _traffic(base: str) -> int:
    """A mix of methods and codes; returns the number of requests the app answered."""
    with httpx.Client(base_url=base, timeout=5.0, trust_env=False) as client:
        for _ in range(5):
            assert client.get("/").status_code == 200
        assert client.post("/echo", content=b"hi").status_code == 200
        assert client.get("/nowhere").status_code == 404
        assert client.request("PURGE", "/").status_code == 200
    return 8


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_accepts_the_scrape() -> None:
    assert PROMTOOL is not None
    with serve_with_metrics("shardcorn.demo:app", "--limit-concurrency", "10") as (server, url):
        served = _traffic(server.url)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as bad:
            bad.sendall(b"BROKEN\r\n\r\n")
            bad.recv(1024)
        wait_for(url, lambda s: s.total("shardcorn_http_requests_total") == served, "traffic")
        body = httpx.get(url, timeout=5.0, trust_env=False).text
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=body.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output.strip() == "", output  # not even a lint warning


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _prometheus(tmp_path: Path, target: str, metrics_path: str) -> Iterator[str]:
    """A Prometheus server on loopback scraping ``target`` every 200 ms; yields its URL."""
    assert PROMETHEUS is not None
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 200ms\n"
        "  scrape_timeout: 150ms\n"
        "scrape_configs:\n"
        "  - job_name: shardcorn\n"
        f"    metrics_path: {metrics_path}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, tmp_path / "prometheus.log")
        yield url
    finally:
        stop_process(proc)
        log.close()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise AssertionError(f"prometheus not ready after {timeout}s:\n{log.read_text()}")


def _query(url: str, promql: str) -> list[dict[str, object]]:
    response = httpx.get(
        f"{url}/api/v1/query", params={"query": promql}, timeout=5.0, trust_env=False
    )
    payload = response.json()
    assert response.status_code == 200, f"{promql}: {payload}"
    assert payload["status"] == "success", payload
    result: list[dict[str, object]] = payload["data"]["result"]
    return result


def _wait_query(url: str, promql: str, expected: str, timeout: float = 30.0) -> None:
    """Query until the single result's value is ``expected``; bounded by ``timeout`` s."""
    deadline = time.monotonic() + timeout
    result: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        result = _query(url, promql)
        if len(result) == 1 and result[0]["value"][1] == expected:  # type: ignore[index]
            return
        time.sleep(0.2)
    raise AssertionError(f"{promql} did not become {expected} in {timeout}s: {result}")


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian prometheus)")
def test_a_prometheus_server_scrapes_the_exporter(tmp_path: Path) -> None:
    args = ("shardcorn.demo:app", "--metrics-path", "/internal/metrics")
    with serve_with_metrics(*args) as (server, url):
        served = _traffic(server.url)
        wait_for(url, lambda s: s.total("shardcorn_http_requests_total") == served, "traffic")
        target = urlsplit(url).netloc
        with _prometheus(tmp_path, target, "/internal/metrics") as prometheus:
            _wait_query(prometheus, 'up{job="shardcorn"}', "1")
            _wait_query(prometheus, "sum(shardcorn_http_requests_total)", str(served))
            _wait_query(prometheus, 'sum(shardcorn_http_requests_total{method="OTHER"})', "1")
            _wait_query(prometheus, "shardcorn_shards", "1")
            _wait_query(
                prometheus,
                "sum(shardcorn_http_request_duration_seconds_count)",
                str(served),
            )
            info = _query(prometheus, "shardcorn_build_info")
            assert info[0]["metric"]["mode"] == "single"  # type: ignore[index]
            # Every query of the example dashboard is valid PromQL over the live series.
            for title, promql in dashboard_queries():
                try:
                    _query(prometheus, promql)
                except AssertionError as exc:
                    raise AssertionError(f"dashboard panel {title!r}: {exc}") from None
