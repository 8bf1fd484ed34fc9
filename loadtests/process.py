"""What the runner's two children (the server and Locust) share: environment, process groups."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def child_env(drop_prefix: str | None = None) -> dict[str, str]:
    """This environment with the repository on ``PYTHONPATH`` (for ``shardcorn`` and
    ``loadtests``), less every variable starting with ``drop_prefix``."""
    env = {
        k: v for k, v in os.environ.items() if drop_prefix is None or not k.startswith(drop_prefix)
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def kill_group(pgid: int) -> bool:
    """SIGKILL a process group the runner created; True if anything was still in it.

    Only groups made with ``start_new_session=True`` are passed here, so the group id is the
    id of the runner's own child and nothing else is signalled.
    """
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def live_members(pgid: int) -> list[str]:
    """The processes of a group that are still running, as "pid command" (Linux: /proc).

    Zombies are left out: a helper whose parent has exited is reparented to PID 1, and in a
    container PID 1 may never reap it, so a dead helper can stay listed as ``Z`` for good.
    """
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue  # it exited while we looked
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
            found.append(f"{entry.name} {command[:120]}")
    return found


def wait_group_gone(pgid: int, timeout: float) -> list[str]:
    """Wait until no process of the group is running; return those still running at the end.

    A server's main process can exit a moment before its helpers do (multiprocessing's
    resource tracker leaves when it reads end-of-file on its pipe from the exited parent), so
    the group gets ``timeout`` seconds to empty itself before anything counts as left behind.
    """
    deadline = time.monotonic() + timeout
    while True:
        members = live_members(pgid)
        if not members or time.monotonic() >= deadline:
            return members
        time.sleep(0.05)
