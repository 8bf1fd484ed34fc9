"""A server's Python-level cost per request, in one process: ``python bench/hotpath.py --help``.

No sockets, no load generator: see bench/inprocess.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> int:
    # Run as a script, sys.path[0] is bench/ itself, not the repo root that holds the bench
    # package; the repo root replaces it (as in bench/run.py).
    here = Path(__file__).resolve().parent
    if sys.path and Path(sys.path[0] or ".").resolve() == here:
        sys.path[0] = str(here.parent)
    else:
        sys.path.insert(0, str(here.parent))
    os.chdir(here.parent)  # the apps are imported as bench.apps
    from bench.inprocess import main as inprocess_main

    return inprocess_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
