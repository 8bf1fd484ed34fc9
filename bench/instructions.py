"""Instructions and syscalls per request, per server: ``python bench/instructions.py --help``.

Needs valgrind; the method is in bench/icount.py.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    # Run as a script, sys.path[0] is bench/ (whose profile.py would shadow the standard
    # library's); the repo root, which holds the bench package, takes its place.
    here = Path(__file__).resolve().parent
    sys.path[0] = str(here.parent)
    from bench.icount import main as icount_main

    return icount_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
