"""Instructions and syscalls per request, per server: ``python bench/instructions.py --help``.

Needs valgrind; the method is in bench/icount.py.
"""

from __future__ import annotations

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
    from bench.icount import main as icount_main

    return icount_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
