"""The prometheus-client collector: every shard's stats block, decoded at scrape time.

Shards never see a prometheus-client object. At each scrape this collector reads the blocks
(:class:`~shardcorn.metrics.store.StatsStore`), the launcher's view of its shards
(:class:`~shardcorn.metrics.store.ShardTable`) and ``/proc``, and builds fresh metric
families from them. Label ``shard`` is the slot index, which a replacement shard inherits,
so a series carries on across restarts.

Choices a user can see (also in the README and ``docs/metrics.md``):

* A slot is reported once a shard has run on it (``ShardTable.used``), with zeros until it
  counts, and from then on for good: ``rate()`` gets a baseline, a shard that has served
  nothing yet shows up, and the counters of a slot whose shard is gone stay in the sums.
  Spare slots (the launcher sizes its store for shards it may add later) are left out
  until they are used.
* Gauges of a slot with no running shard are 0: a crashed process cannot lower its own.
* ``shardcorn_shard_cpu_seconds_total`` and ``..._resident_memory_bytes`` describe the shard
  process of a slot. Thread and single-mode shards run in the launcher process, so every
  running slot reports that one process: take ``max``, not ``sum``, over ``shard`` there.
* ``shardcorn_concurrency_limit`` is 0 when ``--limit-concurrency`` is not set.
"""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from shardcorn import __version__
from shardcorn.config import Config
from shardcorn.metrics import stats as slots
from shardcorn.metrics.procstat import cpu_seconds, resident_bytes
from shardcorn.metrics.stats import StatsReader
from shardcorn.metrics.store import RESTART_REASONS, ShardTable, StatsStore

# "0.005", ..., "10.0", "+Inf": how prometheus-client spells the bounds of its own histograms.
_BUCKET_LABELS = (*(repr(float(bound)) for bound in slots.DURATION_BOUNDS), "+Inf")
_DIRECTIONS = (("received", slots.WEBSOCKET_MESSAGES_IN), ("sent", slots.WEBSOCKET_MESSAGES_OUT))


@dataclass
class _SlotCpu:
    """CPU seconds of one slot: what earlier processes used, plus the current one's."""

    pid: int | None = None
    current: float = 0.0  # the most the current process has been seen to use
    retired: float = 0.0  # the sum over processes that have left the slot


class CpuTotals:
    """Keeps ``shardcorn_shard_cpu_seconds_total`` monotonic across shard restarts.

    A replacement process starts again from zero CPU, so the slot's counter is the sum of
    every process it has had. A process's final time comes from the launcher's table when
    it read it as the process left; otherwise from the last scrape that saw it alive (the
    little it used after that scrape is lost, never counted twice).
    """

    def __init__(self) -> None:
        self._slots: dict[int, _SlotCpu] = {}

    def observe(self, slot: int, pid: int | None, exit_cpu: tuple[int, float] | None) -> float:
        """The slot's total after seeing ``pid`` on it (None: nothing runs there now)."""
        state = self._slots.setdefault(slot, _SlotCpu())
        if exit_cpu is not None and exit_cpu[0] == state.pid:
            state.current = max(state.current, exit_cpu[1])
        if pid is None:
            # Nothing runs there: the last process's time stays in the total. It is retired
            # only when another process takes the slot; thread shards come back with the
            # same (launcher) pid, whose time must not be counted twice.
            return state.retired + state.current
        if state.pid is not None and state.pid != pid:
            state.retired += state.current
            state.current = 0.0
        state.pid = pid
        seconds = cpu_seconds(pid)
        if seconds is not None:
            state.current = max(state.current, seconds)
        return state.retired + state.current


class ShardcornCollector(Collector):
    """Yields every ``shardcorn_*`` family; register it in a private CollectorRegistry."""

    def __init__(self, config: Config, store: StatsStore, table: ShardTable) -> None:
        self.store = store
        self.table = table
        self.concurrency_limit = config.limit_concurrency or 0
        self._cpu = CpuTotals()
        # Scrapes may overlap (the exporter serves each in its own thread); CpuTotals is
        # stateful, so one scrape reads at a time. Shards never take this lock.
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            families = list(self._families())
        return iter(families)

    def _families(self) -> Iterable[Metric]:
        table = self.table
        pids = table.pids  # one snapshot: the launcher replaces the dict, never edits it
        used = table.used | pids.keys()
        readers = [
            (str(i), self.store.reader(i), i in pids) for i in range(self.store.slots) if i in used
        ]
        yield from _traffic(readers)
        yield from _process(readers, pids, table, self._cpu)
        yield _gauge("shardcorn_shards", "Shards running.", value=len(pids))
        yield _gauge(
            "shardcorn_concurrency_limit",
            "The configured --limit-concurrency, per shard (0: no limit).",
            value=self.concurrency_limit,
        )
        info = GaugeMetricFamily(
            "shardcorn_build_info",
            "shardcorn version, Python version, event loop and shard mode (always 1).",
            labels=("version", "python", "loop", "mode"),
        )
        info.add_metric((__version__, platform.python_version(), table.loop, table.mode), 1)
        yield info


_Readers = list[tuple[str, StatsReader, bool]]


def _traffic(readers: _Readers) -> Iterator[Metric]:
    """Everything the shards count themselves, from their blocks."""
    requests = CounterMetricFamily(
        "shardcorn_http_requests",
        "HTTP requests answered, by method and status code.",
        labels=("shard", "method", "code"),
    )
    duration = HistogramMetricFamily(
        "shardcorn_http_request_duration_seconds",
        "Time from the end of a request's head to the end of its response.",
        labels=("shard",),
    )
    bad = CounterMetricFamily(
        "shardcorn_bad_requests",
        "Requests refused by the protocol layer (4xx/5xx) without calling the app.",
        labels=("shard", "code"),
    )
    ws_messages = CounterMetricFamily(
        "shardcorn_websocket_messages",
        "WebSocket messages, by direction (received from or sent to clients).",
        labels=("shard", "direction"),
    )
    for shard, reader, _ in readers:
        for (method, code), count in sorted(reader.requests().items()):
            requests.add_metric((shard, method, str(code)), count)
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for label, count in zip(_BUCKET_LABELS, reader.duration_buckets(), strict=True):
            cumulative += count
            buckets.append((label, cumulative))
        duration.add_metric((shard,), buckets, reader.duration_sum())
        for code, count in sorted(reader.bad_requests().items()):
            bad.add_metric((shard, str(code)), count)
        for direction, slot in _DIRECTIONS:
            ws_messages.add_metric((shard, direction), reader.get(slot))
    yield requests
    yield duration
    yield bad
    yield ws_messages
    yield _per_shard(
        readers,
        GaugeMetricFamily,
        "shardcorn_http_requests_in_flight",
        "Requests being answered (concurrency).",
        slots.REQUESTS_IN_FLIGHT,
    )
    yield _per_shard(
        readers,
        GaugeMetricFamily,
        "shardcorn_connections_open",
        "Open HTTP connections.",
        slots.CONNECTIONS_OPEN,
    )
    yield _per_shard(
        readers,
        CounterMetricFamily,
        "shardcorn_connections_accepted",
        "Connections accepted.",
        slots.CONNECTIONS_ACCEPTED,
    )
    yield _per_shard(
        readers,
        CounterMetricFamily,
        "shardcorn_concurrency_rejected",
        "Requests answered 503 because of --limit-concurrency.",
        slots.CONCURRENCY_REJECTED,
    )
    yield _per_shard(
        readers,
        GaugeMetricFamily,
        "shardcorn_keepalive_idle_connections",
        "Connections waiting for a next request.",
        slots.KEEPALIVE_IDLE,
    )
    yield _per_shard(
        readers,
        CounterMetricFamily,
        "shardcorn_keepalive_reused_requests",
        "Requests served on a connection that had served one before.",
        slots.KEEPALIVE_REUSED,
    )
    yield _per_shard(
        readers,
        CounterMetricFamily,
        "shardcorn_keepalive_timeouts",
        "Idle keep-alive connections closed by --timeout-keep-alive.",
        slots.KEEPALIVE_TIMEOUTS,
    )
    yield _per_shard(
        readers,
        GaugeMetricFamily,
        "shardcorn_websocket_connections_open",
        "Open WebSocket connections.",
        slots.WEBSOCKETS_OPEN,
    )


def _per_shard(
    readers: _Readers,
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    slot: int,
) -> Metric:
    family = kind(name, documentation, labels=("shard",))
    gauge = kind is GaugeMetricFamily
    for shard, reader, running in readers:
        family.add_metric((shard,), reader.get(slot) if running or not gauge else 0)
    return family


def _process(
    readers: _Readers, pids: dict[int, int | None], table: ShardTable, cpu: CpuTotals
) -> Iterator[Metric]:
    """What the launcher knows: restarts, and each shard process's CPU and memory."""
    restarts = CounterMetricFamily(
        "shardcorn_shard_restarts",
        "Shards replaced, by reason (crash, healthcheck, max_requests, reload).",
        labels=("shard", "reason"),
    )
    memory = GaugeMetricFamily(
        "shardcorn_shard_resident_memory_bytes",
        "Resident memory of the shard's process (thread shards: the launcher process).",
        labels=("shard",),
    )
    cpu_total = CounterMetricFamily(
        "shardcorn_shard_cpu_seconds",
        "CPU time of the shard's processes, summed over restarts "
        "(thread shards: the launcher process).",
        labels=("shard",),
    )
    launcher = os.getpid()
    counts = table.restarts
    exits = table.exit_cpu
    for shard, _, _ in readers:
        index = int(shard)
        for reason in RESTART_REASONS:
            restarts.add_metric((shard, reason), counts.get((index, reason), 0))
        pid: int | None = None
        if index in pids:
            pid = pids[index] or launcher
            rss = resident_bytes(pid)
            if rss is not None:
                memory.add_metric((shard,), rss)
        cpu_total.add_metric((shard,), cpu.observe(index, pid, exits.get(index)))
    yield restarts
    yield memory
    yield cpu_total


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
