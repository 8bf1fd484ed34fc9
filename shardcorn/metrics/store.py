"""Where the shards' stats blocks live, so the launcher's exporter can read all of them.

One block of :data:`SLOT_BYTES` per shard *slot* (not per shard process): a replacement shard
takes over its predecessor's block, so counters survive restarts while gauges are reset.
A block has one writer at a time: a replacement must not write a slot while the shard it
replaces still serves on it, or increments from the two would be lost (``+=`` on shared
memory is a read and a write, not an atomic add).

* Thread shards and a single in-process shard: one ``bytearray`` per slot, so that growing
  the store leaves the blocks live writers hold where they are.
* Process shards: a file in ``/dev/shm`` (or the temp dir) mapped with ``mmap`` by the
  launcher and by each child. Chosen over prometheus-client's multiprocess mode, which
  keeps one mmap'd file per process and metric kind, takes a lock per update and has the
  exporter merge every file at scrape time; here an update is one aligned 8-byte store into
  memory the shard alone writes (``docs/metrics.md`` has the numbers).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile

from shardcorn.metrics.procstat import cpu_seconds
from shardcorn.metrics.stats import SLOT_BYTES, ShardStats, StatsReader


def _shm_dir() -> str:
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


class StatsStore:
    """``slots`` stats blocks, in process memory or in a shared file."""

    def __init__(self, slots: int, shared: bool = False, path: str | None = None) -> None:
        self.slots = slots
        self.shared = shared or path is not None
        self.path: str | None = None
        self._owner = False
        self._mmap: mmap.mmap | None = None
        self._blocks: list[memoryview] = []
        if not self.shared:
            self._blocks = [memoryview(bytearray(SLOT_BYTES)) for _ in range(slots)]
            return
        size = slots * SLOT_BYTES
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
        whole = memoryview(self._mmap)
        self._blocks = [whole[i * SLOT_BYTES : (i + 1) * SLOT_BYTES] for i in range(slots)]
        whole.release()

    @classmethod
    def attach(cls, path: str, slots: int) -> StatsStore:
        """Open, in a shard process, the store its launcher created."""
        return cls(slots, path=path)

    @classmethod
    def over(cls, stats: ShardStats) -> StatsStore:
        """A one-slot store over the block an existing writer already bumps (single mode)."""
        store = cls(0)
        store._blocks = [stats.block]
        store.slots = 1
        return store

    def block(self, index: int) -> memoryview:
        if not 0 <= index < self.slots:
            raise IndexError(f"no stats slot {index} (have {self.slots})")
        return self._blocks[index]

    def writer(self, index: int) -> ShardStats:
        """The write side of slot ``index``, for the shard that (re)starts on it.

        Making the writer resets the slot's gauges (see ``ShardStats``): make it once per
        shard start, before the shard listens, and only after its predecessor has stopped.
        """
        return ShardStats(self.block(index))

    def reader(self, index: int) -> StatsReader:
        return StatsReader(self.block(index))

    def grow(self, slots: int) -> None:
        """Make room for more slots (thread mode only: shared files are sized up front)."""
        if slots <= self.slots:
            return
        if self.shared:
            raise ValueError("a shared stats store cannot grow; size it for the most shards")
        # New blocks are appended; existing writers keep the blocks they hold.
        self._blocks = [
            *self._blocks,
            *(memoryview(bytearray(SLOT_BYTES)) for _ in range(slots - self.slots)),
        ]
        self.slots = slots

    def close(self) -> None:
        """Unmap (and, in the launcher, remove the file). Readers must be dropped first."""
        blocks, self._blocks = self._blocks, []
        for block in blocks:
            block.release()
        if self._mmap is not None:
            # BufferError: a view is still alive somewhere; the mapping goes with the process.
            with contextlib.suppress(BufferError):
                self._mmap.close()
        if self._owner and self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


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
        # slot -> (pid, CPU seconds) of the last process that left the slot, read as it left:
        # the exporter adds it to the slot's CPU total so that counter never goes backwards.
        self.exit_cpu: dict[int, tuple[int, float]] = {}
        # Every slot a shard has run on: the exporter reports these, and not spare slots.
        self.used: frozenset[int] = frozenset()

    def shard_up(self, index: int, pid: int | None) -> None:
        self._note_exit(index, pid)
        self.pids = {**self.pids, index: pid}
        if index not in self.used:
            self.used = self.used | {index}

    def shard_down(self, index: int) -> None:
        """The shard on ``index`` stopped or died. Call it before reaping the process, if you
        can: a zombie's final CPU time is still readable, a reaped process's is gone."""
        self._note_exit(index, None)
        self.pids = {k: v for k, v in self.pids.items() if k != index}

    def _note_exit(self, index: int, new_pid: int | None) -> None:
        old = self.pids.get(index)
        if old is None or old == new_pid:
            return
        seconds = cpu_seconds(old)
        if seconds is not None:
            self.exit_cpu = {**self.exit_cpu, index: (old, seconds)}

    def restarted(self, index: int, reason: str) -> None:
        if reason not in RESTART_REASONS:
            raise ValueError(f"unknown restart reason {reason!r}")
        key = (index, reason)
        self.restarts = {**self.restarts, key: self.restarts.get(key, 0) + 1}

    @property
    def running(self) -> int:
        return len(self.pids)
