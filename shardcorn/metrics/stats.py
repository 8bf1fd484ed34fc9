"""The counters one shard bumps while it serves: plain integer slots in a flat buffer.

Each shard owns one block of 64-bit slots (:data:`SLOT_BYTES` bytes). The shard is the only
writer of its block, so no lock is needed; the exporter only reads. For process shards the
blocks live in shared memory (see ``metrics.store``); for thread shards or a single shard a
plain ``bytearray`` does. Keeping the hot path to ``memoryview`` item increments costs a few
tens of nanoseconds per counter and needs no prometheus-client object in the shard.

The layout is fixed, so the exporter can decode any block without talking to the shard:
label values are bounded (known methods, else OTHER; status codes 100-599).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import compress

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER")
METHOD_INDEX = {name: i for i, name in enumerate(METHODS)}
OTHER_METHOD = METHOD_INDEX["OTHER"]
FIRST_CODE, LAST_CODE = 100, 599
CODE_COUNT = LAST_CODE - FIRST_CODE + 1
# prometheus-client's default histogram bounds; the last bucket is +Inf.
DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# Scalar slots.
CONNECTIONS_OPEN = 0  # gauge
CONNECTIONS_ACCEPTED = 1
REQUESTS_IN_FLIGHT = 2  # gauge
CONCURRENCY_REJECTED = 3
KEEPALIVE_IDLE = 4  # gauge
KEEPALIVE_REUSED = 5
KEEPALIVE_TIMEOUTS = 6
WEBSOCKETS_OPEN = 7  # gauge
WEBSOCKET_MESSAGES_IN = 8
WEBSOCKET_MESSAGES_OUT = 9
SHARD_UP = 10  # gauge: 1 while the shard serves
DURATION_COUNT = 11  # unused: the count is the sum of the buckets (one increment saved)
DURATION_BUCKETS = 12  # len(DURATION_BOUNDS) + 1 slots
REQUESTS = DURATION_BUCKETS + len(DURATION_BOUNDS) + 1  # METHODS x CODES
BAD_REQUESTS = REQUESTS + len(METHODS) * CODE_COUNT  # codes 400..599
INT_SLOTS = BAD_REQUESTS + 200
GAUGES = (CONNECTIONS_OPEN, REQUESTS_IN_FLIGHT, KEEPALIVE_IDLE, WEBSOCKETS_OPEN, SHARD_UP)
# Where (method, status) is counted: _REQUEST_BASE[method] + status, one dict lookup a request.
_REQUEST_BASE = {name: REQUESTS + i * CODE_COUNT - FIRST_CODE for i, name in enumerate(METHODS)}
_OTHER_BASE = _REQUEST_BASE["OTHER"]
_FIRST_BOUND = DURATION_BOUNDS[0]
_CODES = range(FIRST_CODE, LAST_CODE + 1)  # ``in`` a range: one C call, no chained compare
# One double (the histogram sum) follows the integers; round up to whole pages.
_RAW_BYTES = INT_SLOTS * 8 + 8
SLOT_BYTES = (_RAW_BYTES + 4095) // 4096 * 4096


class ShardStats:
    """Write side of one shard's counters. Every method is a handful of integer increments."""

    __slots__ = ("_ints", "_sum", "block")

    def __init__(self, buffer: memoryview | bytearray | None = None) -> None:
        view = memoryview(buffer if buffer is not None else bytearray(SLOT_BYTES))
        if len(view) < SLOT_BYTES:
            raise ValueError(f"a stats block needs {SLOT_BYTES} bytes, got {len(view)}")
        self.block = view[:SLOT_BYTES]  # so the launcher can hand the same block to a reader
        self._ints = view[: INT_SLOTS * 8].cast("q")
        self._sum = view[INT_SLOTS * 8 : INT_SLOTS * 8 + 8].cast("d")
        # A new writer takes the slot over: the gauges a crashed predecessor left behind are
        # not ours. Reset here, before the shard listens, and not in shard_started(): the
        # shard's first loop iteration may accept a connection before shard_started() runs,
        # and resetting then would drive connections_open below zero when it closes.
        ints = self._ints
        for slot in GAUGES:
            ints[slot] = 0

    # -- lifecycle -------------------------------------------------------------------------
    def shard_started(self) -> None:
        """The shard serves. Counters carry on from the slot's predecessors."""
        self._ints[SHARD_UP] = 1

    def shard_stopped(self) -> None:
        # The other gauges are left to fall to zero on their own: connections aborted at
        # shutdown report connection_lost after this, and a zeroed gauge would go negative.
        # The exporter reports a stopped slot's gauges as 0 anyway.
        self._ints[SHARD_UP] = 0

    # -- connections -----------------------------------------------------------------------
    def connection_opened(self) -> None:
        ints = self._ints
        ints[CONNECTIONS_OPEN] += 1
        ints[CONNECTIONS_ACCEPTED] += 1

    def connection_closed(self) -> None:
        self._ints[CONNECTIONS_OPEN] -= 1

    def keepalive_idle(self, delta: int) -> None:
        self._ints[KEEPALIVE_IDLE] += delta

    def keepalive_timeout(self) -> None:
        self._ints[KEEPALIVE_TIMEOUTS] += 1

    # -- requests --------------------------------------------------------------------------
    def request_started(self, reused: bool) -> None:
        ints = self._ints
        ints[REQUESTS_IN_FLIGHT] += 1
        if reused:
            ints[KEEPALIVE_REUSED] += 1

    def request_finished(self, method: str, status: int, duration: float) -> None:
        ints = self._ints
        ints[REQUESTS_IN_FLIGHT] -= 1
        if status in _CODES:
            ints[_REQUEST_BASE.get(method, _OTHER_BASE) + status] += 1
        # bisect_left: a duration equal to a bound falls in that bound's bucket (le="...").
        # Most requests fall in the first bucket: they skip the search.
        if duration <= _FIRST_BOUND:
            ints[DURATION_BUCKETS] += 1
        else:
            ints[DURATION_BUCKETS + bisect_left(DURATION_BOUNDS, duration)] += 1
        self._sum[0] += duration

    def concurrency_rejected(self) -> None:
        self._ints[CONCURRENCY_REJECTED] += 1

    def bad_request(self, status: int) -> None:
        if 400 <= status <= 599:
            self._ints[BAD_REQUESTS + status - 400] += 1

    # -- websockets ------------------------------------------------------------------------
    def websocket_opened(self) -> None:
        self._ints[WEBSOCKETS_OPEN] += 1

    def websocket_closed(self) -> None:
        self._ints[WEBSOCKETS_OPEN] -= 1

    def websocket_message(self, incoming: bool) -> None:
        self._ints[WEBSOCKET_MESSAGES_IN if incoming else WEBSOCKET_MESSAGES_OUT] += 1


class StatsReader:
    """Read side of one block: used by the exporter (and tests) at scrape time."""

    __slots__ = ("_ints", "_sum")

    def __init__(self, buffer: memoryview | bytearray) -> None:
        view = memoryview(buffer)
        self._ints = view[: INT_SLOTS * 8].cast("q")
        self._sum = view[INT_SLOTS * 8 : INT_SLOTS * 8 + 8].cast("d")

    def get(self, slot: int) -> int:
        return int(self._ints[slot])

    def duration_sum(self) -> float:
        return float(self._sum[0])

    def duration_buckets(self) -> list[int]:
        """Per-bucket (not cumulative) counts; the last one is +Inf."""
        start = DURATION_BUCKETS
        values: list[int] = self._ints[start : start + len(DURATION_BOUNDS) + 1].tolist()
        return values

    def requests(self) -> dict[tuple[str, int], int]:
        """Non-zero request counts keyed by (method, status)."""
        found = _nonzero(self._ints[REQUESTS : REQUESTS + len(METHODS) * CODE_COUNT])
        return {
            (METHODS[i // CODE_COUNT], FIRST_CODE + i % CODE_COUNT): value for i, value in found
        }

    def bad_requests(self) -> dict[int, int]:
        return {
            400 + i: value for i, value in _nonzero(self._ints[BAD_REQUESTS : BAD_REQUESTS + 200])
        }


# Words per chunk in _nonzero: measured fastest (25 to 100 are close).
_CHUNK = 25
_ZERO_CHUNK = bytes(8 * _CHUNK)


def _nonzero(words: memoryview) -> Iterator[tuple[int, int]]:
    """(index, value) of the non-zero words, from one snapshot of ``words``.

    Nearly all of the 5,000 (method, status) slots are zero, and a Python loop over all of
    them costs ~150 µs a shard a scrape, taken from the shard's loop in single mode (one
    GIL). Comparing a 200-byte chunk with zeros is one memcmp, so only the few chunks with
    counts are looked at word by word: ~25 µs.
    """
    raw = words.tobytes()  # one copy: the shard keeps writing while we read
    snapshot = memoryview(raw).cast("q")
    for start in range(0, len(snapshot), _CHUNK):
        piece = raw[start * 8 : (start + _CHUNK) * 8]
        if piece != _ZERO_CHUNK and piece.count(0) != len(piece):  # the last may be short
            chunk = snapshot[start : start + _CHUNK].tolist()
            for offset in compress(range(len(chunk)), chunk):
                yield start + offset, chunk[offset]
