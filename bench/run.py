"""Run the side-by-side benchmarks: ``python bench/run.py --help`` (or ``scripts/bench``).

Starts shardcorn, uvicorn and (when installed) granian on the same apps, each pinned to core 0,
loads them with wrk pinned to core 1, interleaving the servers round after round, and writes
the medians to bench/results.md. See bench/README.md for the method.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    # Run as a script, sys.path[0] is bench/ (whose profile.py would shadow the standard
    # library's); the repo root, which holds the bench package, takes its place.
    here = Path(__file__).resolve().parent
    sys.path[0] = str(here.parent)
    from bench.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
