"""Reading shardcorn's Prometheus exporter: scrape, parse, sum, and wait for a quiet server."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Sample names as prometheus-client's parser yields them: a counter family ``x`` has
# samples named ``x_total`` (and ``x_created``, which nothing here reads).
HTTP_REQUESTS = "shardcorn_http_requests_total"
IN_FLIGHT = "shardcorn_http_requests_in_flight"
REJECTED = "shardcorn_concurrency_rejected_total"
WS_MESSAGES = "shardcorn_websocket_messages_total"
CONNECTIONS = "shardcorn_connections_accepted_total"
# Its ``direction`` label, from the server's side: "received" from clients, "sent" to them.
WS_RECEIVED, WS_SENT = "received", "sent"

_COUNTER_SUFFIX = "_total"
# The counters the cross-check compares with Locust; quiet means these stand still.
CHECKED_COUNTERS = (HTTP_REQUESTS, REJECTED, WS_MESSAGES)


class ExporterError(Exception):
    """The exporter could not be read, or the server did not go quiet in time."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """One parsed scrape. Sums are over every label set that matches."""

    samples: tuple[Sample, ...]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        return cls(
            tuple(
                Sample(s.name, dict(s.labels), float(s.value))
                for family in text_string_to_metric_families(text)
                for s in family.samples
            )
        )

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.samples)

    def total(self, name: str) -> float:
        return sum(s.value for s in self.samples if s.name == name)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """The samples of ``name`` summed per value of one label."""
        out: dict[str, float] = defaultdict(float)
        for s in self.samples:
            if s.name == name:
                out[s.labels.get(label, "")] += s.value
        return dict(out)

    def counters(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every shardcorn counter sample, keyed by name and sorted labels."""
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for s in self.samples
            if s.name.startswith("shardcorn_") and s.name.endswith(_COUNTER_SUFFIX)
        }


def counter_delta(before: float, after: float) -> int:
    """A counter's movement as an exact integer; counters here are whole numbers."""
    moved = after - before
    if moved != int(moved):
        raise ExporterError(f"a counter moved by {moved}, which is not a whole number")
    return int(moved)


def label_deltas(before: Scrape, after: Scrape, name: str, label: str) -> dict[str, int]:
    """Per-label-value movement of a counter; values that did not move are left out."""
    old = before.by_label(name, label)
    new = after.by_label(name, label)
    moved = {key: counter_delta(old.get(key, 0.0), new.get(key, 0.0)) for key in old | new}
    return {key: value for key, value in sorted(moved.items()) if value}


def moved_counters(before: Scrape, after: Scrape, skip: Iterable[str] = ()) -> dict[str, float]:
    """Every shardcorn counter family (summed over labels) that moved, except ``skip``.

    Not every counter counts events: ``shardcorn_shard_cpu_seconds_total`` counts seconds,
    so these movements stay floats; only the checked counters must be whole numbers.
    """
    skipped = set(skip)
    old: dict[str, float] = defaultdict(float)
    new: dict[str, float] = defaultdict(float)
    for (name, _), value in before.counters().items():
        old[name] += value
    for (name, _), value in after.counters().items():
        new[name] += value
    moved = {
        name: new.get(name, 0.0) - old.get(name, 0.0)
        for name in old.keys() | new.keys()
        if name not in skipped
    }
    return {name: value for name, value in sorted(moved.items()) if value}


class Exporter:
    """A client for one exporter URL; every request is bounded by ``timeout`` seconds."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        # trust_env=False: a proxy from the environment must never see loopback load tests.
        self._client = httpx.Client(timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def scrape(self) -> Scrape:
        try:
            response = self._client.get(self.url)
        except httpx.HTTPError as exc:
            raise ExporterError(f"cannot scrape {self.url}: {exc!r}") from exc
        if response.status_code != 200:
            raise ExporterError(f"{self.url} answered {response.status_code}")
        try:
            return Scrape.parse(response.text)
        except ValueError as exc:
            raise ExporterError(f"{self.url} answered text the parser rejects: {exc}") from exc

    def wait_quiet(self, timeout: float, interval: float = 0.1) -> Scrape:
        """Scrape until the server is quiet, and return the quiet scrape.

        Quiet means no request in flight on any shard, in two scrapes in a row, with the
        checked counters unchanged between them. In-flight alone is not enough: a request
        whose bytes are still in a socket buffer has not started yet, and a request a killed
        client left behind may start late. One still interval at zero in flight covers both.
        """
        deadline = time.monotonic() + timeout
        previous: Scrape | None = None
        while True:
            current = self.scrape()
            quiet = current.total(IN_FLIGHT) == 0
            if quiet and previous is not None and _checked(previous) == _checked(current):
                return current
            if time.monotonic() >= deadline:
                raise ExporterError(
                    f"the server was not quiet after {timeout:g}s: "
                    f"{current.total(IN_FLIGHT):g} requests in flight"
                )
            previous = current if quiet else None
            time.sleep(interval)


def _checked(scrape: Scrape) -> tuple[float, ...]:
    return tuple(scrape.total(name) for name in CHECKED_COUNTERS)
