"""Fixed glibc malloc thresholds for a serving process (``--tune-malloc``, on by default).

Request and response bodies above 128 KiB are allocations of their own in glibc's malloc.
Left to itself, glibc serves a new size with ``mmap`` until one such block has been freed,
and gives the top of its heap back to the kernel as soon as twice the largest block freed so
far lies unused there. A server answering large bodies keeps crossing those lines: each time,
the next allocation faults its pages back in, one kernel trap and one zeroed 4 KiB page at a
time. On the ``echo1m`` benchmark (1 MiB POSTs echoed back, bench/) that was 0.3 to 53 page
faults per request, varying from run to run (uvicorn: up to 23); with the thresholds
below, none after warm-up.

The price is memory kept for reuse: up to :data:`TRIM_THRESHOLD` of free heap per process
stays mapped instead of going back to the kernel (glibc itself raises its threshold to 64 MiB
for a process that frees 32 MiB blocks). Blocks of :data:`MMAP_THRESHOLD` and more still get
a mapping of their own, returned whole when freed.

Nothing is changed when the environment already sets one of glibc's malloc variables
(``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
``MALLOC_MMAP_MAX_``, or a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES``): the operator chose.
Nor off glibc (musl, macOS), where ``mallopt`` is missing or means something else.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_OPERATOR_VARIABLES = (
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)


def operator_chose() -> bool:
    """Whether the environment sets glibc's malloc thresholds itself."""
    if any(name in os.environ for name in _OPERATOR_VARIABLES):
        return True
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def tune_malloc() -> bool:
    """Fix this process's malloc thresholds (see the module docstring); True if done."""
    if not sys.platform.startswith("linux") or operator_chose():
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  # glibc only: musl has no such function
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success. The mmap threshold goes first: glibc caps it, not the
    # trim threshold, and either call turns glibc's own adjustment of both off.
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1)
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1) and done
