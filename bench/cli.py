"""Command line of bench/run.py: options -> RunSettings -> run_all -> report."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from bench.procstat import system_busy_seconds
from bench.report import BUSY_MACHINE_PERCENT as _BUSY_MACHINE_PERCENT
from bench.report import markdown, results_table
from bench.runner import Results, RunSettings, print_progress, run_all
from bench.servers import GRANIAN, REPO_ROOT, SHARDCORN, UVICORN, probe
from bench.workloads import BOTH_CPUS, WORKLOADS, WRK_CPUS, Workload
from bench.wrk import WrkSettings, wrk_version

_SERVERS = (SHARDCORN, UVICORN, GRANIAN)
_DEFAULT_ROUNDS, _DEFAULT_DURATION_S, _DEFAULT_WARMUP_S = 3, 5, 2
_QUICK_ROUNDS, _QUICK_DURATION_S, _QUICK_WARMUP_S = 1, 2, 1


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}"
        )
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark shardcorn against uvicorn (and granian) on one pinned core each.",
    )
    parser.add_argument(
        "--workloads",
        type=lambda s: _names(s, list(WORKLOADS), "workload"),
        default=list(WORKLOADS),
        help=f"comma-separated, default all: {','.join(WORKLOADS)}",
    )
    server_names = [kind.name for kind in _SERVERS]
    parser.add_argument(
        "--servers",
        type=lambda s: _names(s, server_names, "server"),
        default=server_names,
        help="comma-separated servers to run, default all installed: " + ",".join(server_names),
    )
    parser.add_argument(
        "--rounds",
        type=_positive,
        help=f"rounds, default {_DEFAULT_ROUNDS} ({_QUICK_ROUNDS} quick)",
    )
    parser.add_argument(
        "--duration",
        type=_positive,
        help=f"measured seconds per server per round, default {_DEFAULT_DURATION_S} "
        f"({_QUICK_DURATION_S} quick)",
    )
    parser.add_argument(
        "--warmup",
        type=_positive,
        help=f"warm-up seconds before each window, default {_DEFAULT_WARMUP_S} "
        f"({_QUICK_WARMUP_S} quick)",
    )
    parser.add_argument("--connections", type=_positive, default=64, help="default 64")
    parser.add_argument(
        "--quick", action="store_true", help="a short run: 1 round, 2 s windows, 1 s warm-up"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "bench" / "results.md",
        help="markdown report to write, default bench/results.md",
    )
    parser.add_argument("--json", type=Path, help="also write every measurement as JSON here")
    return parser


def _preflight(workloads: Sequence[Workload]) -> str | None:
    """Why the benchmark cannot run on this machine, or None."""
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install wrk util-linux)"
    needed = {int(cpu) for cpu in BOTH_CPUS.split(",")} | {int(WRK_CPUS)}
    allowed = os.sched_getaffinity(0)
    if not needed <= allowed:
        return f"needs CPUs {sorted(needed)} but may only use {sorted(allowed)}"
    if not workloads:
        return "no workload left to run"
    return None


def _background_load_percent(seconds: float = 1.0) -> float:
    """CPU % of one core the machine spends on other work while the benchmark is idle."""
    before = system_busy_seconds()
    time.sleep(seconds)
    return (system_busy_seconds() - before) * 100 / seconds


def _versions(availability: dict[str, str]) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    versions.update(availability)
    for package in ("uvloop", "httptools", "starlette"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "missing"
    versions["wrk"] = wrk_version()
    return versions


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    quick: bool = args.quick
    settings = RunSettings(
        rounds=args.rounds or (_QUICK_ROUNDS if quick else _DEFAULT_ROUNDS),
        duration_s=args.duration or (_QUICK_DURATION_S if quick else _DEFAULT_DURATION_S),
        warmup_s=args.warmup or (_QUICK_WARMUP_S if quick else _DEFAULT_WARMUP_S),
        wrk=WrkSettings(connections=args.connections, cpus=WRK_CPUS),
        quick=quick,
    )
    selected = set(args.servers)
    workloads = []
    for name in args.workloads:
        workload = WORKLOADS[name]
        contenders = tuple(c for c in workload.contenders if c.kind.name in selected)
        if contenders:
            workloads.append(dataclasses.replace(workload, contenders=contenders))
    problem = _preflight(workloads)
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2

    kinds = {c.kind.name: c.kind for w in workloads for c in w.contenders}
    availability = {name: probe(kind) for name, kind in kinds.items()}
    for name, found in availability.items():
        state = found.version if found.installed else f"MISSING ({found.version})"
        print_progress(f"{name}: {state}")
    if not any(found.installed for found in availability.values()):
        print("bench: none of the selected servers is installed", file=sys.stderr)
        return 2

    background = _background_load_percent()
    if background > _BUSY_MACHINE_PERCENT:
        print_progress(
            f"warning: the machine is busy ({background:.0f} % of a core used before the run):"
            " req/s and p99 will be noisy; CPU µs/req holds up better"
        )
    results = Results(settings, workloads, availability, background_percent=background)
    with tempfile.TemporaryDirectory(prefix="shardcorn-bench-") as tmp:
        run_all(results, Path(tmp), print_progress)

    versions = _versions(
        {n: a.version if a.installed else "missing" for n, a in availability.items()}
    )
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = markdown(results, versions, date, os.cpu_count() or 0)
    args.output.write_text(report)
    print(results_table(results))
    print_progress(f"report written to {args.output}")
    if args.json:
        payload = {
            "date": date,
            "versions": versions,
            "settings": dataclasses.asdict(settings),
            "measurements": [
                {**dataclasses.asdict(m), "cpu_us_per_request": m.cpu_us_per_request}
                for m in results.measurements
            ],
            "failures": [dataclasses.asdict(f) for f in results.failures],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if results.failures else 0
