"""Run ``python -m shardcorn`` under a given RLIMIT_NOFILE, with shorter EMFILE intervals.

Usage: ``python limited_server.py NOFILE PROBE_SECONDS LOG_SECONDS -- shardcorn args...``.
The limit is set in this process before shardcorn starts (a ``preexec_fn`` would be unsafe
in a test process with threads); the intervals replace :mod:`shardcorn.shards.accept`'s
module values, which each shard reads when it starts.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

# This file runs as a script: put the repository first, as ``python -m shardcorn`` from its
# root would.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str]) -> None:
    nofile, probe, log_interval, separator, *args = argv
    assert separator == "--", argv
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = int(nofile)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    # Imported once the limit is set, so that nothing shardcorn opens escapes it.
    from shardcorn.cli.main import main as shardcorn_main
    from shardcorn.shards import accept

    accept.PROBE_INTERVAL = float(probe)
    accept.LOG_INTERVAL = float(log_interval)
    shardcorn_main(args, prog_name="shardcorn")


if __name__ == "__main__":
    main(sys.argv[1:])
