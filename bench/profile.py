"""Flat profile of shardcorn (or a peer) under wrk load: ``python bench/profile.py --help``.

Needs py-spy (``pip install py-spy``) and the right to ptrace the server (root, or
kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    # Run as a script, sys.path[0] is bench/ (whose profile.py would shadow the standard
    # library's); the repo root, which holds the bench package, takes its place.
    here = Path(__file__).resolve().parent
    sys.path[0] = str(here.parent)
    from bench.flatprofile import main as profile_main

    return profile_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
