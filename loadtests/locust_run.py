"""Running Locust headless in a subprocess, and reading back the CSV files it writes."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from loadtests.contract import (
    FINAL_CSV_SUFFIX,
    REJECTED_BY_DESIGN,
    WS_CONNECT_NAME,
    WS_REQUEST_TYPE,
)
from loadtests.process import child_env, kill_group
from loadtests.scenarios import LOCUSTFILES, Scenario

# Loaded next to every scenario; it adds no users, only the final CSV tables.
FINAL_CSV_PLUGIN = LOCUSTFILES / "final_csv.py"

_RUN_TIME = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class LocustError(Exception):
    """Locust did not run to the end, or left no statistics behind."""


def run_time_seconds(text: str) -> int:
    """Locust's ``--run-time`` syntax (``90``, ``10s``, ``1m30s``, ``1h``) in seconds."""
    if text.isdigit():
        return int(text)
    match = _RUN_TIME.match(text)
    if not text or match is None:
        raise ValueError(f"not a Locust run time: {text!r} (try 10s, 1m30s)")
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class LocustOptions:
    host: str
    users: int
    spawn_rate: float
    run_time: str
    # Users still in a task when the run time ends get this long to finish it, so that no
    # request the server has answered is left out of Locust's counts (a killed user's last
    # request would reach the server but never Locust's statistics).
    stop_timeout: int = 10


def locust_argv(scenario: Scenario, options: LocustOptions, csv_prefix: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        f"{scenario.locustfile_path},{FINAL_CSV_PLUGIN}",
        "--headless",
        "--host",
        options.host,
        "-u",
        str(options.users),
        "-r",
        f"{options.spawn_rate:g}",
        "--run-time",
        options.run_time,
        "--stop-timeout",
        str(options.stop_timeout),
        "--csv",
        str(csv_prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
        # The runner judges failures itself (some 503s are expected); a non-zero exit from
        # Locust then means it could not run at all.
        "--exit-code-on-error",
        "0",
        *scenario.user_classes,
    ]


def run_locust(argv: list[str], cwd: Path, timeout: float) -> str:
    """Run Locust to its end and return what it printed; LocustError if it failed or hung.

    It runs in its own process group so that a hung run can be killed whole. Its working
    directory is a fresh one, so no ``locust.conf`` or ``pyproject.toml`` is picked up, and
    no ``LOCUST_*`` variable leaks in: the command line is the whole configuration.
    """
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=child_env(drop_prefix="LOCUST_"),
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process.pid)
        output, _ = process.communicate()
        text = output.decode(errors="replace")
        raise LocustError(f"Locust did not finish in {timeout:g}s\n{_tail(text)}") from None
    except BaseException:
        # Interrupted (Ctrl-C, or SIGTERM turned into SystemExit by the runner): Locust must
        # not outlive the runner any more than the server may.
        kill_group(process.pid)
        process.wait()
        raise
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise LocustError(f"Locust exited with code {process.returncode}\n{_tail(text)}")
    return text


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class StatsRow:
    type: str
    name: str
    requests: int
    failures: int
    rps: float
    # Percentiles in ms; None where Locust wrote N/A (no request of that name).
    p50: int | None
    p95: int | None
    p99: int | None


@dataclass(frozen=True)
class FailureRow:
    method: str
    name: str
    error: str
    occurrences: int


@dataclass(frozen=True)
class LocustStats:
    rows: tuple[StatsRow, ...]
    aggregated: StatsRow
    failures: tuple[FailureRow, ...]
    # Exceptions raised inside users (bugs in a locustfile), as "count x message".
    exceptions: tuple[str, ...]

    @property
    def http_requests(self) -> int:
        return sum(r.requests for r in self.rows if r.type != WS_REQUEST_TYPE)

    @property
    def ws_messages(self) -> int:
        """WebSocket round trips attempted: each sent one message (and expects one back)."""
        return sum(
            r.requests for r in self.rows if r.type == WS_REQUEST_TYPE and r.name != WS_CONNECT_NAME
        )

    @property
    def ws_handshakes(self) -> int:
        """WebSocket handshakes that succeeded."""
        return sum(
            r.requests - r.failures
            for r in self.rows
            if r.type == WS_REQUEST_TYPE and r.name == WS_CONNECT_NAME
        )

    @property
    def rejected_by_design(self) -> int:
        return sum(f.occurrences for f in self.failures if REJECTED_BY_DESIGN in f.error)

    @property
    def total_failures(self) -> int:
        return sum(r.failures for r in self.rows)

    @property
    def unexpected_failures(self) -> tuple[FailureRow, ...]:
        return tuple(f for f in self.failures if REJECTED_BY_DESIGN not in f.error)


def read_stats(csv_prefix: Path) -> LocustStats:
    """Read the final tables: ``PREFIX_final_stats.csv``, ``..._failures.csv`` and
    ``..._exceptions.csv``, which ``final_csv.py`` writes in Locust's own CSV format."""
    stats = _read_csv(csv_prefix, "stats")
    if not stats or stats[-1].get("Name") != "Aggregated":
        raise LocustError(f"Locust's final stats CSV under {csv_prefix} has no Aggregated row")
    rows = tuple(_stats_row(r) for r in stats)
    failures = tuple(
        FailureRow(r["Method"], r["Name"], r["Error"], int(r["Occurrences"]))
        for r in _read_csv(csv_prefix, "failures")
    )
    exceptions = tuple(
        f"{r['Count']} x {r['Message']}" for r in _read_csv(csv_prefix, "exceptions")
    )
    return LocustStats(rows[:-1], rows[-1], failures, exceptions)


def _read_csv(csv_prefix: Path, kind: str) -> list[dict[str, str]]:
    path = csv_prefix.with_name(f"{csv_prefix.name}{FINAL_CSV_SUFFIX}_{kind}.csv")
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError as exc:
        raise LocustError(f"cannot read Locust's {kind} CSV: {exc}") from exc


def _stats_row(row: dict[str, str]) -> StatsRow:
    return StatsRow(
        type=row["Type"],
        name=row["Name"],
        requests=int(row["Request Count"]),
        failures=int(row["Failure Count"]),
        rps=float(row["Requests/s"]),
        p50=_percentile(row["50%"]),
        p95=_percentile(row["95%"]),
        p99=_percentile(row["99%"]),
    )


def _percentile(cell: str) -> int | None:
    return None if cell == "N/A" else int(cell)
