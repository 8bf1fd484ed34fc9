"""What the runner's two children (the server and Locust) share: environment, process groups."""

from __future__ import annotations

import os
import signal
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
