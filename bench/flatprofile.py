"""A flat profile of a server under wrk load, sampled with py-spy (``bench/profile.py``).

py-spy samples the server's Python stacks from outside the process (no instrumentation, so the
hot path runs as it does in the benchmark). Its "raw" output is one line per distinct stack,
``frame;frame;...;leaf count``; this module folds those into two rankings:

- self: samples whose innermost frame is the function, i.e. time spent in its own code (and in
  C functions it calls, which py-spy does not show without --native);
- total: samples with the function anywhere on the stack, i.e. time under it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.runner import server_command
from bench.servers import GRANIAN, HOST, SHARDCORN, UVICORN, free_port, probe, running
from bench.workloads import WORKLOADS, WRK_CPUS, Contender, Workload
from bench.wrk import WrkSettings, run_wrk, write_post_script, wrk_command

_KINDS = {kind.name: kind for kind in (SHARDCORN, UVICORN, GRANIAN)}
_PEER_WORKLOADS = ("hello", "starlette", "body64k", "echo1m")
_TRUNK_SHARE = 0.995


@dataclass(frozen=True)
class FlatProfile:
    samples: int
    self_samples: Counter[str]
    total_samples: Counter[str]


def parse_raw(text: str) -> FlatProfile:
    """Fold py-spy's raw (collapsed-stack) output into self and total sample counts."""
    self_samples: Counter[str] = Counter()
    total_samples: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            # Only a process frame whose command line holds a newline spills over lines.
            continue
        # With --subprocesses the outermost frame names the process, not a function.
        frames = [frame for frame in stack.split(";") if not frame.startswith("process ")]
        if not frames:
            continue
        count = int(count_text)
        samples += count
        self_samples[frames[-1]] += count
        for frame in set(frames):  # a recursive function counts once per sample
            total_samples[frame] += count
    return FlatProfile(samples, self_samples, total_samples)


def format_profile(profile: FlatProfile, top: int) -> str:
    if not profile.samples:
        return "no samples: was the server busy, and may py-spy ptrace it?"
    out = [f"{profile.samples} samples (py-spy leaves out the ones it judges idle)"]
    # The trunk (runpy, click, asyncio.run, the loop) is on every stack and says nothing.
    trunk = {f for f, n in profile.total_samples.items() if n >= profile.samples * _TRUNK_SHARE}
    below_trunk = Counter({f: n for f, n in profile.total_samples.items() if f not in trunk})
    for title, counter in (("self", profile.self_samples), ("total", below_trunk)):
        out += ["", f"{title:>6} %  function (file)"]
        for frame, count in counter.most_common(top):
            out.append(f"{count * 100 / profile.samples:8.1f}  {frame}")
    out += ["", f"(total leaves out {len(trunk)} frames found on every stack)"]
    return "\n".join(out)


def profile_server(
    contender: Contender,
    workload: Workload,
    *,
    duration_s: int,
    rate: int,
    wrk: WrkSettings,
    native: bool = False,
    nonblocking: bool = False,
) -> FlatProfile:
    """Run the server under wrk load and sample it with py-spy for ``duration_s`` seconds."""
    port = free_port()
    url = f"http://{HOST}:{port}/"
    with tempfile.TemporaryDirectory(prefix="shardcorn-profile-") as tmp:
        script = write_post_script(Path(tmp), workload.post_size) if workload.post_size else None
        output = Path(tmp) / "stacks.txt"
        with running(server_command(workload.app, contender, port, None), port) as server:
            run_wrk(wrk_command(wrk, url, 1, script), 1)  # warm-up
            spy = subprocess.Popen(
                [
                    *("py-spy", "record", "--pid", str(server.pid), "--subprocesses"),
                    *("--rate", str(rate), "--duration", str(duration_s), "--nolineno"),
                    *("--format", "raw", "--output", str(output)),
                    *(["--native"] if native else []),
                    *(["--nonblocking"] if nonblocking else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                # The load outlasts the sampling by a second so every sample sees a busy server.
                run_wrk(wrk_command(wrk, url, duration_s + 1, script), duration_s + 1)
                _, errors = spy.communicate(timeout=30)
            finally:
                if spy.poll() is None:
                    spy.kill()
                    spy.wait()
            if spy.returncode != 0:
                raise RuntimeError(f"py-spy failed ({spy.returncode}): {errors.strip()}")
        return parse_raw(output.read_text())


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/profile.py",
        description="Flat py-spy profile of a server (one shard, core 0) under wrk load (core 1).",
    )
    parser.add_argument("--server", choices=list(_KINDS), default="shardcorn")
    parser.add_argument("--workload", choices=_PEER_WORKLOADS, default="hello")
    parser.add_argument("--duration", type=int, default=5, help="seconds sampled, default 5")
    parser.add_argument("--rate", type=int, default=250, help="samples per second, default 250")
    parser.add_argument("--top", type=int, default=25, help="rows per ranking, default 25")
    parser.add_argument(
        "--native",
        action="store_true",
        help="also sample C/Cython frames (uvloop, httptools): slower sampling, fuller picture",
    )
    parser.add_argument(
        "--nonblocking",
        action="store_true",
        help="sample without stopping the server: a stopped process stops at a syscall's end, "
        "which charges syscalls (read/write) too many samples; unstopped stacks are unbiased "
        "but now and then torn",
    )
    args = parser.parse_args(argv)
    for tool in ("py-spy", "wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"profile: {tool} is not installed (pip install py-spy; apt-get install wrk)")
            return 2
    workload = WORKLOADS[args.workload]
    contender = next(c for c in workload.contenders if c.kind.name == args.server)
    availability = probe(contender.kind)
    if not availability.installed:
        print(f"profile: {args.server} is missing: {availability.version}", file=sys.stderr)
        return 2
    print(f"profiling {args.server} {availability.version} on {workload.name}, {args.duration} s")
    flat = profile_server(
        contender,
        workload,
        duration_s=args.duration,
        rate=args.rate,
        wrk=WrkSettings(cpus=WRK_CPUS),
        native=args.native,
        nonblocking=args.nonblocking,
    )
    print(format_profile(flat, args.top))
    return 0
