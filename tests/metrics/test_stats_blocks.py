"""The stats blocks: what a shard writes is what a reader decodes, in memory and in /dev/shm."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import pytest

from shardcorn.metrics import stats as slots
from shardcorn.metrics.stats import SLOT_BYTES, ShardStats, StatsReader
from shardcorn.metrics.store import ShardTable, StatsStore


def test_counters_and_histogram_decode() -> None:
    stats = ShardStats()
    reader = StatsReader(stats.block)
    stats.connection_opened()
    stats.request_started(reused=False)
    stats.request_finished("GET", 200, 0.004)
    stats.request_started(reused=True)
    stats.request_finished("PURGE", 404, 0.3)
    stats.request_started(reused=True)
    stats.request_finished("POST", 99, 20.0)  # outside 100-599: timed, not counted by code
    stats.bad_request(431)
    stats.bad_request(200)  # not an error code: ignored
    stats.concurrency_rejected()
    assert reader.requests() == {("GET", 200): 1, ("OTHER", 404): 1}
    assert reader.bad_requests() == {431: 1}
    assert reader.get(slots.KEEPALIVE_REUSED) == 2
    assert reader.get(slots.REQUESTS_IN_FLIGHT) == 0
    assert reader.get(slots.CONNECTIONS_ACCEPTED) == 1
    assert reader.get(slots.CONCURRENCY_REJECTED) == 1
    buckets = reader.duration_buckets()
    assert len(buckets) == len(slots.DURATION_BOUNDS) + 1
    assert buckets[0] == 1  # 0.004 <= 0.005
    assert buckets[slots.DURATION_BOUNDS.index(0.5)] == 1  # 0.3 in (0.25, 0.5]
    assert buckets[-1] == 1  # 20 s: +Inf
    assert reader.duration_sum() == pytest.approx(20.304)


def test_bucket_edges_are_inclusive() -> None:
    # Prometheus buckets are "less than or equal": a duration equal to a bound is in it.
    stats = ShardStats()
    stats.request_started(False)
    stats.request_finished("GET", 200, 0.1)
    buckets = StatsReader(stats.block).duration_buckets()
    assert buckets[slots.DURATION_BOUNDS.index(0.1)] == 1


def test_a_new_writer_resets_gauges_and_keeps_counters() -> None:
    store = StatsStore(1)
    first = store.writer(0)
    first.shard_started()
    first.connection_opened()
    first.keepalive_idle(1)
    first.request_started(False)  # the shard dies with this request in flight
    first.websocket_opened()
    reader = store.reader(0)
    assert reader.get(slots.SHARD_UP) == 1
    second = store.writer(0)  # the replacement takes the slot over
    for gauge in slots.GAUGES:
        assert reader.get(gauge) == 0, gauge
    assert reader.get(slots.CONNECTIONS_ACCEPTED) == 1
    # shard_started() no longer resets: a connection accepted before it stays counted.
    second.connection_opened()
    second.shard_started()
    assert reader.get(slots.CONNECTIONS_OPEN) == 1
    second.shard_stopped()
    assert reader.get(slots.SHARD_UP) == 0
    assert reader.get(slots.CONNECTIONS_OPEN) == 1  # falls when the connection closes
    second.connection_closed()
    assert reader.get(slots.CONNECTIONS_OPEN) == 0


def test_growing_keeps_the_blocks_writers_hold() -> None:
    store = StatsStore(1)
    writer = store.writer(0)
    store.grow(3)
    writer.connection_opened()  # still lands where the store reads slot 0
    assert store.slots == 3
    assert store.reader(0).get(slots.CONNECTIONS_ACCEPTED) == 1
    store.writer(2).concurrency_rejected()
    assert store.reader(2).get(slots.CONCURRENCY_REJECTED) == 1
    with pytest.raises(IndexError):
        store.block(3)


def test_store_over_an_existing_writer() -> None:
    stats = ShardStats()
    store = StatsStore.over(stats)
    stats.keepalive_timeout()
    assert store.slots == 1
    assert store.reader(0).get(slots.KEEPALIVE_TIMEOUTS) == 1


def test_a_short_block_is_refused() -> None:
    with pytest.raises(ValueError, match="needs"):
        ShardStats(bytearray(SLOT_BYTES - 8))


def test_shared_store_is_written_by_a_child_process() -> None:
    store = StatsStore(2, shared=True)
    assert store.path is not None
    child = textwrap.dedent(
        f"""
        from shardcorn.metrics.store import StatsStore
        store = StatsStore.attach({store.path!r}, 2)
        stats = store.writer(1)
        for _ in range(1000):
            stats.request_started(reused=True)
            stats.request_finished("GET", 200, 0.001)
        """
    )
    subprocess.run([sys.executable, "-c", child], check=True, timeout=30)
    reader = store.reader(1)
    assert reader.requests() == {("GET", 200): 1000}
    assert reader.get(slots.KEEPALIVE_REUSED) == 1000
    assert store.reader(0).requests() == {}
    path = store.path
    del reader
    store.close()
    with pytest.raises(FileNotFoundError):
        open(path, "rb")  # noqa: SIM115  # the launcher removes the file


def test_shard_table_counts_restarts_and_running_shards() -> None:
    table = ShardTable("process", "uvloop")
    table.shard_up(0, 100)
    table.shard_up(1, 101)
    table.shard_down(1)
    table.restarted(1, "crash")
    table.restarted(1, "crash")
    table.shard_up(1, 102)
    assert table.running == 2
    assert table.restarts == {(1, "crash"): 2}
    with pytest.raises(ValueError, match="reason"):
        table.restarted(0, "boredom")


def test_shard_table_keeps_a_leaving_process_cpu_time() -> None:
    # A process that has exited but is not reaped yet (a zombie) still has its CPU times in
    # /proc: shard_down() reads them then.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass",
        ]
    )
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, still a zombie
        table = ShardTable("process", "asyncio")
        table.shard_up(0, child.pid)
        table.shard_down(0)
        pid, seconds = table.exit_cpu[0]
        assert pid == child.pid
        assert seconds >= 0.25
    finally:
        child.wait(10)


def test_reader_finds_every_count_among_the_zeros() -> None:
    # The reader skips all-zero chunks of the (method, status) table: counts at the edges of
    # the table and of its chunks must all be found, with their values.
    rng = random.Random(4)
    stats = ShardStats()
    expected: dict[tuple[str, int], int] = {}
    keys = [("GET", 100), ("OTHER", 599), ("HEAD", 124), ("HEAD", 125), ("PATCH", 599)]
    keys += [(rng.choice([*slots.METHODS, "PURGE"]), rng.randint(100, 599)) for _ in range(200)]
    for method, code in keys:
        for _ in range(rng.randint(1, 3)):
            stats.request_started(False)
            stats.request_finished(method, code, 0.01)
            key = (method if method in slots.METHODS else "OTHER", code)
            expected[key] = expected.get(key, 0) + 1
    for code in (400, 424, 425, 599):
        stats.bad_request(code)
    reader = StatsReader(stats.block)
    assert reader.requests() == expected
    assert reader.bad_requests() == {400: 1, 424: 1, 425: 1, 599: 1}
