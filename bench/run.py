"""Run the side-by-side benchmarks: ``python bench/run.py --help`` (or ``scripts/bench``).

Starts shardcorn, uvicorn and (when installed) granian on the same apps, each pinned to core 0,
loads them with wrk pinned to core 1, interleaving the servers round after round, and writes
the medians to bench/results.md. See bench/README.md for the method.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    # Run as a script, sys.path[0] is bench/ itself, not the repo root that holds the bench
    # package, and modules there could shadow others by name; the repo root replaces it.
    here = Path(__file__).resolve().parent
    if sys.path and Path(sys.path[0] or ".").resolve() == here:
        sys.path[0] = str(here.parent)
    else:
        sys.path.insert(0, str(here.parent))
    from bench.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
