"""Where the shards' stats blocks live, so the launcher's exporter can read all of them.

One block of :data:`SLOT_BYTES` per shard *slot* (not per shard process): a replacement shard
takes over its predecessor's block, so counters survive restarts while gauges are reset.

* Thread shards and a single in-process shard: one ``bytearray``.
* Process shards: a file in ``/dev/shm`` (or the temp dir) mapped with ``mmap`` by the
  launcher and by each child. Chosen over prometheus-client's multiprocess mode, which
  writes one file per process and metric and takes a lock per update; here an update is one
  aligned 8-byte store into memory the shard alone writes (measured in bench/).
"""

from __future__ import annotations

import mmap
import os
import tempfile

from shardcorn.metrics.stats import SLOT_BYTES, ShardStats, StatsReader


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else (
        tempfile.gettempdir()
    )


class StatsStore:
    """``slots`` stats blocks, in process memory or in a shared file."""

    def __init__(self, slots: int, shared: bool = False, path: str | None = None) -> None:
        self.slots = slots
        self.shared = shared or path is not None
        self.path: str | None = None
        self._owner = False
        self._mmap: mmap.mmap | None = None
        size = slots * SLOT_BYTES
        if not self.shared:
            self._buffer: memoryview = memoryview(bytearray(size))
            return
        if path is None:
            fd, path = tempfile.mkstemp(prefix="shardcorn-stats-", dir=_shm_dir())
            os.ftruncate(fd, size)
            self._owner = True
        else:
            fd = os.open(path, os.O_RDWR)
        try:
            self._mmap = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.path = path
        self._buffer = memoryview(self._mmap)

    @classmethod
    def attach(cls, path: str, slots: int) -> StatsStore:
        """Open, in a shard process, the store its launcher created."""
        return cls(slots, path=path)

    def block(self, index: int) -> memoryview:
        if not 0 <= index < self.slots:
            raise IndexError(f"no stats slot {index} (have {self.slots})")
        return self._buffer[index * SLOT_BYTES : (index + 1) * SLOT_BYTES]

    def writer(self, index: int) -> ShardStats:
        return ShardStats(self.block(index))

    def reader(self, index: int) -> StatsReader:
        return StatsReader(self.block(index))

    def grow(self, slots: int) -> None:
        """Make room for more slots (thread mode only: shared files are sized up front)."""
        if slots <= self.slots:
            return
        if self.shared:
            raise ValueError("a shared stats store cannot grow; size it for the most shards")
        bigger = bytearray(slots * SLOT_BYTES)
        bigger[: len(self._buffer)] = self._buffer
        self._buffer = memoryview(bigger)
        self.slots = slots

    def close(self) -> None:
        """Unmap (and, in the launcher, remove the file). Readers must be dropped first."""
        self._buffer.release()
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # a view is still alive somewhere; the mapping goes with the process
        if self._owner and self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


RESTART_REASONS = ("crash", "healthcheck", "max_requests", "reload")


class ShardTable:
    """The launcher's own view of its shards, read by the exporter at scrape time.

    Written only by the launcher (the supervisor thread), read by the exporter thread: each
    update replaces whole values, so a reader never sees a half-written record.
    """

    def __init__(self, mode: str, loop: str) -> None:
        self.mode = mode  # "process" | "thread" | "single"
        self.loop = loop
        self.pids: dict[int, int | None] = {}  # slot -> pid (None: runs in the launcher)
        self.restarts: dict[tuple[int, str], int] = {}

    def shard_up(self, index: int, pid: int | None) -> None:
        self.pids = {**self.pids, index: pid}

    def shard_down(self, index: int) -> None:
        self.pids = {k: v for k, v in self.pids.items() if k != index}

    def restarted(self, index: int, reason: str) -> None:
        if reason not in RESTART_REASONS:
            raise ValueError(f"unknown restart reason {reason!r}")
        key = (index, reason)
        self.restarts = {**self.restarts, key: self.restarts.get(key, 0) + 1}

    @property
    def running(self) -> int:
        return len(self.pids)
