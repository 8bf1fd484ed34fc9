"""A server's Python-level cost per request, in one process: ``python bench/hotpath.py --help``.

No sockets, no load generator: see bench/inprocess.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> int:
    # Run as a script, sys.path[0] is bench/ (whose profile.py would shadow the standard
    # library's); the repo root, which holds the bench package, takes its place.
    here = Path(__file__).resolve().parent
    sys.path[0] = str(here.parent)
    os.chdir(here.parent)  # the apps are imported as bench.apps
    from bench.inprocess import main as inprocess_main

    return inprocess_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
