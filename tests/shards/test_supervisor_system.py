"""The supervisor with the rest of the system: the metrics exporter reading its table and the
stats blocks across a rolling restart, and SIGTTOU in a network namespace where
``net.ipv4.tcp_migrate_req`` can be set without touching the machine."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.shards.helpers import get, log_lines, serve_shards

pytestmark = pytest.mark.slow

SCENARIO = str(Path(__file__).resolve().parent / "netns_scenario.py")


@pytest.fixture(params=["process", "thread"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    match = re.match(r"http://([^:/]+):(\d+)(/\S*)", url)
    assert match is not None
    conn = http.client.HTTPConnection(match.group(1), int(match.group(2)), timeout=10)
    try:
        conn.request("GET", match.group(3))
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def test_the_exporter_counts_every_request_across_a_rolling_restart(mode: str) -> None:
    pytest.importorskip("shardcorn.metrics.exporter")
    with serve_shards(mode, "--metrics-port", "0") as server:
        url = log_lines(server, r"Metrics exporter on (\S+)")[0].split("Metrics exporter on ")[1]
        url = url.strip()
        for _ in range(50):
            assert get(server, "/who")[0] == 200
        server.send_signal(signal.SIGHUP)
        log_lines(server, "Rolling restart complete", timeout=40)
        for _ in range(50):
            assert get(server, "/who")[0] == 200
        # The roll waits for each old shard to drain, so by now every successor has taken
        # its slot's stats block over (ADOPT), and its private counts with it.
        samples = scrape(url)
        assert total(samples, "shardcorn_http_requests_total") == 100
        assert samples[("shardcorn_shards", ())] == 2
        for shard in ("0", "1"):
            key = ("shardcorn_shard_restarts_total", (("reason", "reload"), ("shard", shard)))
            assert samples[key] == 1
            up = ("shardcorn_connections_open", (("shard", shard),))
            assert samples[up] >= 0
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


def test_sigttou_with_tcp_migrate_req_loses_no_connection(mode: str) -> None:
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr.decode().strip()}")
    done = subprocess.run(
        ["unshare", "-n", sys.executable, SCENARIO, mode, "1"],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["failed"] == 0, result
    assert result["shards"] == 3 and result["exit"] == 0
    assert result["warned"] is False


def test_a_fresh_namespace_has_tcp_migrate_req_0_and_the_launcher_warns() -> None:
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr.decode().strip()}")
    done = subprocess.run(
        ["unshare", "-n", sys.executable, SCENARIO, "process", "0"],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["warned"] is True and result["exit"] == 0
