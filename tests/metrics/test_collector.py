"""The collector on its own: stats blocks and a shard table in, metric families out.

The metric names, kinds and labels are an interface (dashboards and alerts are built on
them), so the whole table is pinned here.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from shardcorn import __version__
from shardcorn.config import Config
from shardcorn.metrics.collector import ShardcornCollector
from shardcorn.metrics.store import ShardTable, StatsStore
from tests.metrics.metrics_scraping import INTERFACE, Scrape


def _config(**settings: Any) -> Config:
    return Config(app="shardcorn.demo:app", **settings)


def _scrape(collector: ShardcornCollector) -> Scrape:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return Scrape.parse(generate_latest(registry).decode())


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[bytes]]:
    """A process that burns 0.3 s of CPU, then waits for stdin to close."""
    code = (
        "import sys, time\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\n"
        "print('burnt', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"burnt\n"
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(10)
    proc.stdout.close()


def test_every_family_has_its_kind_and_labels() -> None:
    store = StatsStore(2)
    stats = store.writer(1)
    stats.request_started(False)
    stats.request_finished("GET", 200, 0.01)
    stats.bad_request(400)
    table = ShardTable("thread", "asyncio")
    table.shard_up(0, None)
    table.shard_up(1, None)
    scrape = _scrape(ShardcornCollector(_config(), store, table))
    assert {name: kind for name, (kind, _) in INTERFACE.items()} == dict(scrape.types)
    for sample in scrape.samples:
        labels = set(sample.labels) - {"le"}
        assert labels == INTERFACE[sample.family][1], sample


def test_values_per_shard() -> None:
    store = StatsStore(2)
    zero, one = store.writer(0), store.writer(1)
    for _ in range(3):
        zero.connection_opened()
        zero.request_started(reused=False)
        zero.request_finished("GET", 200, 0.002)
    one.connection_opened()
    one.request_started(reused=False)
    one.request_finished("DELETE", 404, 1.5)
    one.request_started(reused=True)  # still in flight
    one.keepalive_idle(1)
    one.concurrency_rejected()
    one.bad_request(503)
    one.websocket_opened()
    one.websocket_message(incoming=True)
    one.websocket_message(incoming=False)
    one.websocket_message(incoming=False)
    table = ShardTable("thread", "uvloop")
    table.shard_up(0, None)
    table.shard_up(1, None)
    table.restarted(1, "max_requests")
    s = _scrape(ShardcornCollector(_config(limit_concurrency=7), store, table))

    assert s.by("shardcorn_http_requests_total", "shard") == {"0": 3, "1": 1}
    assert s.total("shardcorn_http_requests_total", method="DELETE", code="404") == 1
    assert s.total("shardcorn_http_request_duration_seconds_count", shard="0") == 3
    assert s.total("shardcorn_http_request_duration_seconds_bucket", shard="0", le="0.005") == 3
    assert s.total("shardcorn_http_request_duration_seconds_bucket", shard="1", le="1.0") == 0
    assert s.total("shardcorn_http_request_duration_seconds_bucket", shard="1", le="2.5") == 1
    assert s.total("shardcorn_http_request_duration_seconds_sum", shard="1") == 1.5
    assert s.by("shardcorn_http_requests_in_flight", "shard") == {"0": 0, "1": 1}
    assert s.by("shardcorn_connections_accepted_total", "shard") == {"0": 3, "1": 1}
    assert s.by("shardcorn_keepalive_reused_requests_total", "shard") == {"0": 0, "1": 1}
    assert s.by("shardcorn_keepalive_idle_connections", "shard") == {"0": 0, "1": 1}
    assert s.by("shardcorn_concurrency_rejected_total", "shard") == {"0": 0, "1": 1}
    assert s.total("shardcorn_bad_requests_total", shard="1", code="503") == 1
    assert s.by("shardcorn_websocket_messages_total", "direction") == {"received": 1, "sent": 2}
    assert s.total("shardcorn_websocket_connections_open") == 1
    assert s.total("shardcorn_concurrency_limit") == 7
    assert s.total("shardcorn_shards") == 2
    assert s.total("shardcorn_shard_restarts_total", shard="1", reason="max_requests") == 1
    assert s.total("shardcorn_shard_restarts_total", shard="0") == 0
    assert len(s.matching("shardcorn_shard_restarts_total")) == 2 * 4  # every slot x reason
    (info,) = s.matching("shardcorn_build_info")
    assert info.value == 1
    assert dict(info.labels) == {
        "version": __version__,
        "python": platform.python_version(),
        "loop": "uvloop",
        "mode": "thread",
    }


def test_no_limit_reports_zero() -> None:
    table = ShardTable("single", "asyncio")
    table.shard_up(0, None)
    s = _scrape(ShardcornCollector(_config(), StatsStore(1), table))
    assert s.total("shardcorn_concurrency_limit") == 0


def test_a_slot_with_no_shard_reports_zero_gauges_and_keeps_counters() -> None:
    store = StatsStore(2)
    crashed = store.writer(1)
    crashed.shard_started()
    crashed.connection_opened()
    crashed.request_started(False)
    crashed.request_finished("GET", 200, 0.01)
    crashed.request_started(True)  # dies in the middle of this one
    table = ShardTable("process", "uvloop")
    table.shard_up(0, os.getpid())
    table.shard_up(1, 2**22 + 1)  # above the default pid_max: no such process
    table.shard_down(1)
    s = _scrape(ShardcornCollector(_config(), store, table))
    assert s.total("shardcorn_shards") == 1
    assert s.total("shardcorn_http_requests_in_flight", shard="1") == 0
    assert s.total("shardcorn_connections_open", shard="1") == 0
    assert s.total("shardcorn_http_requests_total", shard="1") == 1
    assert s.matching("shardcorn_shard_resident_memory_bytes", shard="1") == []
    assert s.total("shardcorn_shard_resident_memory_bytes", shard="0") > 0


def test_cpu_seconds_never_go_back_when_a_process_is_replaced(
    burner: subprocess.Popen[bytes],
) -> None:
    table = ShardTable("process", "uvloop")
    collector = ShardcornCollector(_config(), StatsStore(1), table)
    table.shard_up(0, burner.pid)
    before = _scrape(collector).total("shardcorn_shard_cpu_seconds_total")
    assert before >= 0.25
    # The shard dies and is reaped before the launcher notices: its last scraped time stays.
    burner.kill()
    burner.wait(10)
    table.shard_down(0)
    assert _scrape(collector).total("shardcorn_shard_cpu_seconds_total") == before
    table.shard_up(0, os.getpid())  # the replacement, with its own CPU time on top
    after = _scrape(collector).total("shardcorn_shard_cpu_seconds_total")
    own = _scrape(collector).total("shardcorn_shard_resident_memory_bytes")
    assert own > 0
    assert after >= before + 0.0
    assert after == pytest.approx(before + _own_cpu(), abs=0.1)


def test_cpu_of_a_process_that_died_between_scrapes_comes_from_the_table(
    burner: subprocess.Popen[bytes],
) -> None:
    table = ShardTable("process", "uvloop")
    collector = ShardcornCollector(_config(), StatsStore(1), table)
    table.shard_up(0, os.getpid())
    _scrape(collector)
    table.shard_up(0, burner.pid)
    first = _scrape(collector).total("shardcorn_shard_cpu_seconds_total")
    assert first >= 0.25  # this process's time, retired, plus the burner's
    assert burner.stdin is not None
    burner.stdin.close()
    os.waitid(os.P_PID, burner.pid, os.WEXITED | os.WNOWAIT)  # a zombie: times readable
    table.shard_down(0)  # reads the final time
    burner.wait(10)
    assert _scrape(collector).total("shardcorn_shard_cpu_seconds_total") >= first


def test_thread_shards_report_the_launcher_once_per_slot() -> None:
    table = ShardTable("thread", "asyncio")
    collector = ShardcornCollector(_config(), StatsStore(2), table)
    table.shard_up(0, None)
    table.shard_up(1, None)
    first = _scrape(collector)
    cpu = first.by("shardcorn_shard_cpu_seconds_total", "shard")
    assert cpu["0"] == pytest.approx(cpu["1"], abs=0.05)
    assert cpu["0"] == pytest.approx(_own_cpu(), abs=0.1)
    # A thread shard restarting on slot 1 is the same process: its time is not added twice.
    table.shard_down(1)
    _scrape(collector)
    table.shard_up(1, None)
    again = _scrape(collector).by("shardcorn_shard_cpu_seconds_total", "shard")
    assert again["1"] == pytest.approx(_own_cpu(), abs=0.1)
    assert again["1"] >= cpu["1"]


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def test_spare_slots_appear_once_used_and_stay() -> None:
    table = ShardTable("process", "uvloop")
    collector = ShardcornCollector(_config(), StatsStore(4), table)
    table.shard_up(0, os.getpid())
    table.shard_up(1, os.getpid())
    assert set(_scrape(collector).by("shardcorn_connections_accepted_total", "shard")) == {
        "0",
        "1",
    }
    table.shard_up(3, os.getpid())  # scaled up
    table.shard_down(3)  # and down again
    shards = _scrape(collector).by("shardcorn_connections_accepted_total", "shard")
    assert set(shards) == {"0", "1", "3"}
    assert _scrape(collector).total("shardcorn_shards") == 2
