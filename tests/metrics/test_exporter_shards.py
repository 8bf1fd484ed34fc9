"""One exporter for several shards (``--shards 2``), in process and in thread mode: every shard
is reported under its slot, and counters survive a shard being replaced."""

from __future__ import annotations

import contextlib
import os
import re
import signal

import httpx
import pytest

from shardcorn.testing import ProcessServer
from tests.metrics.metrics_scraping import Scrape, scrape, serve_with_metrics, wait_for

STARTED = re.compile(r"Shard (\d+) started \(pid (\d+)\)")


def _fresh_connections(base: str, count: int, path: str = "/") -> int:
    """``count`` requests, each on a new connection (so the kernel spreads them over the
    shards); returns how many were answered 200."""
    ok = 0
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base, timeout=5.0, trust_env=False, limits=limits) as client:
        for _ in range(count):
            # A connection reset while a shard is replaced: not served, and not counted.
            with contextlib.suppress(httpx.TransportError):
                ok += client.get(path).status_code == 200
    return ok


def _served(s: Scrape) -> float:
    return s.total("shardcorn_http_requests_total")


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_every_shard_is_reported(mode: str) -> None:
    n = 60
    with serve_with_metrics("shardcorn.demo:app", "--shards", "2", "--shard-mode", mode) as (
        server,
        url,
    ):
        assert _fresh_connections(server.url, n) == n
        s = wait_for(url, lambda s: _served(s) == n, f"{n} requests")
        per_shard = s.by("shardcorn_http_requests_total", "shard")
        assert set(per_shard) == {"0", "1"}
        assert all(count > 0 for count in per_shard.values()), per_shard
        assert set(s.by("shardcorn_connections_accepted_total", "shard")) == {"0", "1"}
        assert s.total("shardcorn_connections_accepted_total") == n
        assert s.total("shardcorn_shards") == 2
        (info,) = s.matching("shardcorn_build_info")
        assert info.labels["mode"] == mode
        memory = s.by("shardcorn_shard_resident_memory_bytes", "shard")
        assert set(memory) == {"0", "1"}
        assert all(value > 1_000_000 for value in memory.values())
        cpu = s.by("shardcorn_shard_cpu_seconds_total", "shard")
        assert all(value > 0 for value in cpu.values()), cpu


def _shard_pids(server: ProcessServer) -> dict[int, int]:
    pids: dict[int, int] = {}
    for line in server.output:
        match = STARTED.search(line)
        if match:
            pids[int(match.group(1))] = int(match.group(2))
    return pids


def test_counters_survive_a_crashed_shard() -> None:
    with serve_with_metrics("shardcorn.demo:app", "--shards", "2") as (server, url):
        first = _fresh_connections(server.url, 40)
        before = wait_for(url, lambda s: _served(s) == first, f"{first} requests")
        cpu_before = before.by("shardcorn_shard_cpu_seconds_total", "shard")
        victim = _shard_pids(server)[1]
        os.kill(victim, signal.SIGKILL)
        after = wait_for(
            url,
            lambda s: (
                s.total("shardcorn_shard_restarts_total", shard="1", reason="crash") == 1
                and s.total("shardcorn_shards") == 2
            ),
            "shard 1 replaced after a crash",
            timeout=20,
        )
        assert _served(after) == first
        assert after.by("shardcorn_http_requests_total", "shard") == before.by(
            "shardcorn_http_requests_total", "shard"
        )
        cpu_after = after.by("shardcorn_shard_cpu_seconds_total", "shard")
        assert cpu_after["1"] >= cpu_before["1"]
        assert after.total("shardcorn_http_requests_in_flight", shard="1") == 0
        server.read_until(rf"Shard 1 started \(pid (?!{victim}\))")
        more = _fresh_connections(server.url, 40)
        final = wait_for(url, lambda s: _served(s) == first + more, "the later requests too")
        assert final.total("shardcorn_shard_restarts_total") == 1
        assert final.total("shardcorn_shard_cpu_seconds_total", shard="1") >= cpu_after["1"]


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_counters_survive_max_requests_recycling(mode: str) -> None:
    args = ("--shards", "2", "--shard-mode", mode, "--limit-max-requests", "10")
    with serve_with_metrics("shardcorn.demo:app", *args) as (server, url):
        served = _fresh_connections(server.url, 60)
        s = wait_for(
            url,
            lambda s: (
                _served(s) == served
                and s.total("shardcorn_shard_restarts_total", reason="max_requests") >= 2
            ),
            f"{served} requests and the recycled shards",
            timeout=20,
        )
        assert served >= 50  # a few may meet a shard on its way out
        assert s.total("shardcorn_connections_accepted_total") >= served
        assert scrape(url).total("shardcorn_http_requests_total") == served
