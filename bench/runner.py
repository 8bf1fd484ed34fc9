"""Measuring: start a server, warm it up, load it with wrk, read its CPU time, stop it."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from bench.procstat import ProcessGoneError, sample
from bench.servers import (
    HOST,
    Availability,
    ServerError,
    free_port,
    http_get,
    running,
    wait_until_answers,
)
from bench.workloads import Contender, Workload
from bench.wrk import WrkError, WrkSettings, run_wrk, write_post_script, wrk_command

_SCRAPE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class RunSettings:
    rounds: int
    duration_s: int
    warmup_s: int
    wrk: WrkSettings
    quick: bool


@dataclass(frozen=True)
class Measurement:
    """One measured window of one contender in one round."""

    round: int
    workload: str
    contender: str
    requests: int
    requests_per_s: float
    p50_s: float
    p99_s: float
    cpu_s: float  # server process tree, user + system, over the window
    wrk_cpu_s: float
    other_cpu_s: float  # every other process on the machine over the window
    window_s: float  # wall time of the window the CPU time was read over
    socket_errors: int
    non_2xx: int
    scrapes: int  # successful /metrics scrapes during the window (metrics contenders only)

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s * 1e6 / self.requests if self.requests else float("inf")

    @property
    def cpu_percent(self) -> float:
        """Server CPU use in % of one core: near 100 % per core means the server is the limit."""
        return self.cpu_s * 100 / self.window_s

    @property
    def wrk_cpu_percent(self) -> float:
        return self.wrk_cpu_s * 100 / self.window_s

    @property
    def other_cpu_percent(self) -> float:
        """CPU % of one core used by anything but the server and wrk: noise if it is high."""
        return self.other_cpu_s * 100 / self.window_s


@dataclass(frozen=True)
class Failure:
    round: int
    workload: str
    contender: str
    error: str


@dataclass
class Results:
    settings: RunSettings
    workloads: list[Workload]
    availability: dict[str, Availability]
    background_percent: float  # CPU % of one core used by other work just before the run
    measurements: list[Measurement] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


class _Scraper:
    """Fetches /metrics once a second in a thread, as a Prometheus server would (more often)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-scraper", daemon=True)
        self.succeeded = 0
        self.errors: list[str] = []

    def _loop(self) -> None:
        while not self._stop.wait(_SCRAPE_INTERVAL_S):
            try:
                status, _ = http_get(self._port, "/metrics", timeout_s=2.0)
            except OSError as exc:
                self.errors.append(str(exc))
                continue
            if status == 200:
                self.succeeded += 1
            else:
                self.errors.append(f"HTTP {status}")

    @contextmanager
    def running(self) -> Iterator[_Scraper]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def server_command(
    app: str, contender: Contender, port: int | str, metrics_port: int | str | None
) -> list[str]:
    """The full argv of a contender's server, taskset included."""
    extra = list(contender.extra_args)
    if metrics_port is not None:
        extra += ["--metrics-port", str(metrics_port)]
    argv = contender.kind.command(app, port, extra)
    return ["taskset", "-c", contender.server_cpus, *argv]


def measure(
    workload: Workload, contender: Contender, round_number: int, settings: RunSettings, tmp: Path
) -> Measurement:
    """Start the contender's server, warm it up, measure one window and stop the server."""
    port = free_port()
    metrics_port = free_port() if contender.metrics else None
    url = f"http://{HOST}:{port}/"
    script = write_post_script(tmp, workload.post_size) if workload.post_size else None
    command = server_command(workload.app, contender, port, metrics_port)
    with running(command, port) as server:
        if metrics_port is not None:
            wait_until_answers(server, metrics_port, "/metrics", timeout_s=30.0)
        # Warm-up: connections, caches, the allocator's arenas, lazy imports in the server.
        run_wrk(wrk_command(settings.wrk, url, settings.warmup_s, script), settings.warmup_s)
        scraper = _Scraper(metrics_port) if metrics_port is not None else None
        measured = wrk_command(settings.wrk, url, settings.duration_s, script)
        with scraper.running() if scraper else nullcontext():
            before = sample(server.pid)
            started = time.monotonic()
            report = run_wrk(measured, settings.duration_s)
            window_s = time.monotonic() - started
            after = sample(server.pid)
        if server.process.poll() is not None:
            raise ServerError(f"died during the measurement:\n{server.stderr_tail()}")
        if scraper is not None and scraper.errors:
            raise ServerError(f"/metrics scrapes failed: {scraper.errors[:3]}")
    server_s = after.server_s - before.server_s
    wrk_s = after.reaped_children_s - before.reaped_children_s
    return Measurement(
        round=round_number,
        workload=workload.name,
        contender=contender.label,
        requests=report.requests,
        requests_per_s=report.requests_per_s,
        p50_s=report.latency_s.get(50.0, float("nan")),
        p99_s=report.p99_s,
        cpu_s=server_s,
        wrk_cpu_s=wrk_s,
        # Whatever else ran: other people's jobs on a shared machine, or this script's scraper.
        other_cpu_s=max(0.0, after.system_busy_s - before.system_busy_s - server_s - wrk_s),
        window_s=window_s,
        socket_errors=report.socket_errors,
        non_2xx=report.non_2xx,
        scrapes=scraper.succeeded if scraper else 0,
    )


def describe(measurement: Measurement) -> str:
    line = (
        f"{measurement.requests_per_s:>10,.0f} req/s  p99 {measurement.p99_s * 1e3:7.2f} ms  "
        f"{measurement.cpu_us_per_request:7.1f} CPU-us/req  "
        f"CPU % server {measurement.cpu_percent:3.0f} wrk {measurement.wrk_cpu_percent:3.0f} "
        f"other {measurement.other_cpu_percent:3.0f}"
    )
    if measurement.socket_errors or measurement.non_2xx:
        line += f"  ({measurement.socket_errors} socket errors, {measurement.non_2xx} non-2xx)"
    return line


def run_all(
    results: Results, tmp: Path, progress: Callable[[str], None] = lambda s: None
) -> Results:
    """Measure every available contender of every workload, round after round (A B A B)."""
    settings = results.settings
    for round_number in range(1, settings.rounds + 1):
        for workload in results.workloads:
            for contender in [c for _ in range(workload.passes) for c in workload.contenders]:
                if not results.availability[contender.kind.name].installed:
                    continue
                where = f"[round {round_number}/{settings.rounds}] {workload.name:9} "
                where += f"{contender.label:19}"
                try:
                    measurement = measure(workload, contender, round_number, settings, tmp)
                except (ServerError, WrkError, ProcessGoneError) as exc:
                    error = str(exc) or type(exc).__name__
                    results.failures.append(
                        Failure(round_number, workload.name, contender.label, error)
                    )
                    lines = error.splitlines()
                    brief = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"
                    progress(f"{where} FAILED: {brief}")
                    continue
                results.measurements.append(measurement)
                progress(f"{where} {describe(measurement)}")
    return results


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
