"""CPU time of a process tree, read from /proc.

The server's cost is measured as CPU time, not wall time: on a pinned core, req/s says how fast
the server went, CPU time per request says how much work each request took, and the second is
what stays comparable when the load generator, not the server, is the bottleneck.

A server may run workers or shards as child processes, so the time of every descendant counts.
Each process's own time (utime + stime, all its threads) is added to the time of the children it
has already reaped (cutime + cstime): when a child exits and is waited for, the kernel moves its
time into the parent's cutime/cstime, so the sum over the live tree never goes backwards and never
counts a process twice.
"""

from __future__ import annotations

import os
import resource
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
# /proc/PID/stat counts in clock ticks (USER_HZ), usually 100 per second: a 10 ms resolution,
# which is under 1 % of a multi-second window at full load.
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

# Field numbers from proc(5), counted from 1; the fields after the "(comm)" start at field 3.
_FIRST_FIELD_AFTER_COMM = 3
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME = 4, 14, 15, 16, 17


class ProcessGoneError(Exception):
    """The process whose CPU time was asked for no longer exists."""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may hold spaces and parentheses: everything after the last ")" is space-separated.
    return text[text.rindex(")") + 2 :].split()


def _field(fields: list[str], number: int) -> int:
    return int(fields[number - _FIRST_FIELD_AFTER_COMM])


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children[_field(fields, _PPID)].append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants, parents first."""
    children = _children_by_parent()
    tree = [pid]
    for parent in tree:  # the list grows while it is walked: a breadth-first search
        tree.extend(children.get(parent, ()))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and every descendant, reaped or alive."""
    if _stat_fields(pid) is None:
        raise ProcessGoneError(pid)
    ticks = 0
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields is None:
            # Exited since the scan. Its time is missed by this one sample if its parent was
            # read before it was reaped; servers do not start or stop workers mid-measurement.
            continue
        ticks += sum(_field(fields, n) for n in (_UTIME, _STIME, _CUTIME, _CSTIME))
    return ticks / _TICKS_PER_SECOND


def reaped_children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have exited and been waited for.

    The delta over a wrk run is wrk's own CPU time: wrk is the only child reaped in it.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def system_busy_seconds() -> float:
    """CPU seconds spent by all processes on all CPUs (user + nice + system), from /proc/stat.

    Interrupt and softirq time are left out: on loopback most of it is the benchmark's own
    network traffic, which the kernel does not charge to any process.
    """
    with open(_PROC / "stat") as stat:
        fields = stat.readline().split()  # "cpu user nice system idle iowait irq softirq ..."
    user, nice, system = (int(value) for value in fields[1:4])
    return (user + nice + system) / _TICKS_PER_SECOND


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds consumed so far by the server tree, by reaped children, by the machine."""

    server_s: float
    reaped_children_s: float
    system_busy_s: float


def sample(server_pid: int) -> CpuSample:
    return CpuSample(
        server_s=tree_cpu_seconds(server_pid),
        reaped_children_s=reaped_children_cpu_seconds(),
        system_busy_s=system_busy_seconds(),
    )
