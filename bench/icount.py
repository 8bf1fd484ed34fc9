"""Instructions per request, counted by callgrind (``bench/instructions.py`` runs this).

CPU time per request moves by 10-20 % when other work shares the machine; an instruction count
does not move at all, so it is the number to compare before and after a change to the hot path.
Each server runs under ``valgrind --tool=callgrind`` with instrumentation off while it starts
(Python's start-up and imports are not what we measure), then:

1. instrumentation on, a warm-up of ``requests // 4`` requests (caches, lazy imports, the
   allocator's arenas, and valgrind's retranslation of code it has not instrumented yet);
2. counters zeroed; exactly ``requests`` requests from ``bench/loadgen.py``;
3. a dump: its total ``Ir`` (instructions executed, user space only) over ``requests``.

Kernel work (syscalls, TCP) is not in ``Ir``; the syscalls of the read and write families per
request are counted beside it, from ``/proc/PID/io`` of a run without valgrind.
Needs valgrind (``apt-get install valgrind``); ``--top N`` adds callgrind_annotate's N most
expensive functions (self cost, inclusive cost with ``--inclusive``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import run_load
from bench.servers import GRANIAN, HOST, SHARDCORN, UVICORN, ServerKind, free_port, running
from bench.workloads import WORKLOADS, Workload

_KINDS = {kind.name: kind for kind in (SHARDCORN, UVICORN, GRANIAN)}
_PEER_WORKLOADS = ("hello", "starlette", "body64k", "echo1m")
_TOTALS = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
# Under valgrind a server starts 10-50 times slower than natively.
_READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Count:
    server: str
    workload: str
    requests: int
    instructions: int  # Ir over the measured requests
    syscalls: float  # read + write family syscalls per request (a run without valgrind)
    top: str  # callgrind_annotate's report, or ""

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


def _python() -> str:
    # valgrind must start the interpreter itself: a wrapper (a pyenv shim is a shell script)
    # would be what valgrind instruments, and the real python would run uninstrumented.
    return os.path.realpath(sys.executable)


def _command(kind: ServerKind, workload: Workload, extra: Sequence[str] = ()) -> list[str]:
    """The server's argv, one shard or worker, as bench/run.py starts it (minus taskset)."""
    argv = kind.command(workload.app, "{port}")
    argv[0] = _python()
    if kind is SHARDCORN:
        argv += ["--shards", "1", *extra]
    return argv


def _control(pid: int, *args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args, str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=120,
    )


def _io_syscalls(pid: int) -> int:
    fields = dict(
        line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines() if line
    )
    return int(fields["syscr"]) + int(fields["syscw"])


def _syscalls_per_request(
    kind: ServerKind, workload: Workload, requests: int, connections: int, extra: Sequence[str]
) -> float:
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in _command(kind, workload, extra)]
    with running(command, port) as server:
        run_load(HOST, port, requests // 4 or 1, connections, workload.post_size)
        before = _io_syscalls(server.pid)
        run_load(HOST, port, requests, connections, workload.post_size)
        after = _io_syscalls(server.pid)
    return (after - before) / requests


def count(
    kind: ServerKind,
    workload: Workload,
    requests: int,
    connections: int,
    *,
    top: int = 0,
    inclusive: bool = False,
    extra: Sequence[str] = (),
) -> Count:
    """Count the instructions ``kind`` executes for ``requests`` requests of ``workload``;
    ``extra`` are more shardcorn options (``--metrics-port 9100``: the exporter's cost)."""
    syscalls = _syscalls_per_request(kind, workload, requests, connections, extra)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="shardcorn-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            *("valgrind", "--tool=callgrind", "--instr-atstart=no"),
            f"--callgrind-out-file={out}",
            *(part.replace("{port}", str(port)) for part in _command(kind, workload, extra)),
        ]
        with running(command, port, ready_timeout_s=_READY_TIMEOUT_S) as server:
            _control(server.pid, "--instr=on")
            run_load(HOST, port, requests // 4 or 1, connections, workload.post_size)
            _control(server.pid, "--zero")
            run_load(HOST, port, requests, connections, workload.post_size)
            _control(server.pid, "--dump")
            dump = Path(f"{out}.1")
            deadline = time.monotonic() + 60
            while not _TOTALS.search(dump.read_bytes() if dump.exists() else b""):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"callgrind wrote no complete dump to {dump}")
                time.sleep(0.2)
        totals = _TOTALS.search(dump.read_bytes())
        assert totals is not None
        report = ""
        if top:
            annotate = [
                "callgrind_annotate",
                "--threshold=100",
                *(["--inclusive=yes"] if inclusive else []),
            ]
            done = subprocess.run(
                [*annotate, str(dump)], capture_output=True, text=True, check=True, timeout=300
            )
            report = _top_lines(done.stdout, top)
    return Count(kind.name, workload.name, requests, int(totals.group(1)), syscalls, report)


def _top_lines(annotated: str, top: int) -> str:
    """The first ``top`` function lines of callgrind_annotate's output, paths shortened."""
    lines = annotated.splitlines()
    start = next((i for i, line in enumerate(lines) if "file:function" in line), None)
    if start is None:
        return annotated
    body = [line for line in lines[start + 1 :] if line.strip()][:top]
    return "\n".join(re.sub(r"/\S*/(site-packages|lib/python3\.\d+)/", "", line) for line in body)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/instructions.py",
        description="Instructions (callgrind Ir) and syscalls per request, per server.",
    )
    parser.add_argument("--servers", default="shardcorn,uvicorn", help="comma-separated")
    parser.add_argument(
        "--workloads", default="hello", help="comma-separated: " + ",".join(_PEER_WORKLOADS)
    )
    parser.add_argument(
        "--requests", type=int, default=2000, help="measured requests, default 2000"
    )
    parser.add_argument("--connections", type=int, default=64, help="default 64 (as wrk)")
    parser.add_argument("--top", type=int, default=0, help="show the N most expensive functions")
    parser.add_argument("--inclusive", action="store_true", help="rank --top by inclusive cost")
    parser.add_argument(
        "--shardcorn-args",
        default="",
        help='more shardcorn options, space-separated (e.g. "--metrics-port 9100")',
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("instructions: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    counts: list[Count] = []
    for name in args.workloads.split(","):
        workload = WORKLOADS[name]
        for server in args.servers.split(","):
            result = count(
                _KINDS[server],
                workload,
                args.requests,
                args.connections,
                top=args.top,
                inclusive=args.inclusive,
                extra=args.shardcorn_args.split(),
            )
            counts.append(result)
            print(
                f"{name:9} {server:10} {result.per_request:>12,.0f} Ir/request"
                f"  {result.syscalls:5.2f} syscalls/request",
                file=sys.stderr,
                flush=True,
            )
            if result.top:
                print(result.top, file=sys.stderr, flush=True)
    print("\n| workload | server | Ir/request | ratio | read+write syscalls/request |")
    print("| --- | --- | --- | --- | --- |")
    for result in counts:
        base = next(
            (c for c in counts if c.workload == result.workload and c.server == "uvicorn"), None
        )
        ratio = f"{result.per_request / base.per_request:.2f}" if base else "-"
        print(
            f"| {result.workload} | {result.server} | {result.per_request:,.0f} | {ratio} "
            f"| {result.syscalls:.2f} |"
        )
    return 0
