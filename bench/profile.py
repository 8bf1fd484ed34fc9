"""Flat profile of shardcorn (or a peer) under wrk load: ``python bench/profile.py --help``.

Needs py-spy (``pip install py-spy``) and the right to ptrace the server (root, or
kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    # Run as a script, sys.path[0] is bench/ itself, where this file would shadow the standard
    # library's ``profile`` module; the repo root, which holds the bench package, replaces it.
    here = Path(__file__).resolve().parent
    if sys.path and Path(sys.path[0] or ".").resolve() == here:
        sys.path[0] = str(here.parent)
    else:
        sys.path.insert(0, str(here.parent))
    from bench.flatprofile import main as profile_main

    return profile_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
