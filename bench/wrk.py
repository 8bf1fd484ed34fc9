"""Driving wrk and reading its report.

wrk is run with ``--latency`` and its text report is parsed, so what the tables show is what a
person running the same wrk command would read. The request count is exact in that report; the
latency percentiles are rounded by wrk to three significant digits, which is finer than the
round-to-round noise.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# wrk prints a duration with the unit that keeps the number short: 950.00us, 1.20ms, 2.01s, 1.00m.
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m|h)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in (\d+(?:\.\d+)?)(us|ms|s|m|h),", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+(\d+(?:\.\d+)?)\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.MULTILINE)


class WrkError(Exception):
    """wrk failed, or printed a report this module cannot read."""


@dataclass(frozen=True)
class WrkReport:
    """The numbers of one wrk run."""

    requests: int
    duration_s: float
    requests_per_s: float
    latency_s: dict[float, float]  # percentile (50.0, 75.0, 90.0, 99.0) -> seconds
    socket_errors: int
    non_2xx: int

    @property
    def p99_s(self) -> float:
        return self.latency_s[99.0]

    @property
    def clean(self) -> bool:
        """True when every request got a 2xx/3xx answer over a healthy socket."""
        return self.socket_errors == 0 and self.non_2xx == 0


def _seconds(number: str, unit: str) -> float:
    return float(number) * _TIME_UNITS[unit]


def parse_report(text: str) -> WrkReport:
    """Read the text wrk prints when it is run with ``--latency``."""
    requests = _REQUESTS.search(text)
    rate = _RATE.search(text)
    percentiles = {float(p): _seconds(n, u) for p, n, u in _PERCENTILE.findall(text)}
    if requests is None or rate is None or 99.0 not in percentiles:
        raise WrkError(f"cannot read the wrk report (was --latency given?):\n{text}")
    socket_errors = _SOCKET_ERRORS.search(text)
    non_2xx = _NON_2XX.search(text)
    return WrkReport(
        requests=int(requests.group(1)),
        duration_s=_seconds(requests.group(2), requests.group(3)),
        requests_per_s=float(rate.group(1)),
        latency_s=percentiles,
        socket_errors=sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


@dataclass(frozen=True)
class WrkSettings:
    """How wrk loads the server: the same for every server in a run."""

    connections: int = 64
    threads: int = 1
    cpus: str = "1"  # taskset -c list; wrk gets its own core, the server another
    timeout_s: int = 10  # per request; a 1 MiB echo on a loaded core can take a while


def wrk_command(
    settings: WrkSettings, url: str, duration_s: int, script: Path | None = None
) -> list[str]:
    """The argv that runs wrk pinned to its core for ``duration_s`` whole seconds."""
    command = ["taskset", "-c", settings.cpus, "wrk"]
    command += [f"-t{settings.threads}", f"-c{settings.connections}", f"-d{duration_s}s"]
    command += [f"--timeout={settings.timeout_s}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    return [*command, url]


def run_wrk(command: Sequence[str], duration_s: int) -> WrkReport:
    """Run wrk to completion and return its parsed report."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=duration_s + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {duration_s + 60} s") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout}")
    return parse_report(done.stdout)


def wrk_version() -> str:
    """wrk's version ("4.2.0 [epoll]", from "wrk 4.2.0 [epoll] Copyright ..."); wrk -v exits 1."""
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return "missing"
    first_line = (done.stdout or done.stderr).strip().splitlines()[:1]
    return first_line[0].split(" Copyright")[0].removeprefix("wrk ") if first_line else "unknown"


POST_BODY_LUA = """\
-- Written by bench/wrk.py: every request POSTs the same {size}-byte body.
wrk.method = "POST"
wrk.body = string.rep("x", {size})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


def write_post_script(directory: Path, size: int) -> Path:
    """Write a wrk Lua script that POSTs ``size`` bytes per request; return its path."""
    path = directory / f"post_{size}.lua"
    path.write_text(POST_BODY_LUA.format(size=size))
    return path
