"""What the kernel says about a shard process: CPU time and resident memory, from ``/proc``.

Read at scrape time by the exporter, never by a shard. Both readers return None when the
process is gone (or on a system without ``/proc``), and the exporter then leaves the sample
out rather than report a made-up zero.
"""

from __future__ import annotations

import os

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read()
    except OSError:  # gone (ENOENT/ESRCH), or not ours to read
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` (all its threads), in seconds.

    A zombie (exited, not yet reaped) still has its final times here, which is how the
    launcher can keep the CPU a dead shard used (see ``ShardTable.shard_down``).
    """
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')': split
    # after the last ')'. What follows starts at field 3 (state); utime, stime are 14, 15.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (IndexError, ValueError):
        return None


def resident_bytes(pid: int) -> int | None:
    """Resident set size of ``pid``, in bytes (``statm`` field 2 is in pages)."""
    text = _read(f"/proc/{pid}/statm")
    if text is None:
        return None
    fields = text.split()
    try:
        return int(fields[1]) * _PAGE_SIZE
    except (IndexError, ValueError):
        return None
