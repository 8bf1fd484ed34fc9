"""Turning measurements into the markdown report: medians per contender, ratios per workload."""

from __future__ import annotations

import platform
import shlex
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.runner import Measurement, Results, server_command
from bench.workloads import Workload
from bench.wrk import wrk_command


@dataclass(frozen=True)
class Summary:
    """Medians over the rounds of one contender on one workload."""

    rounds: int
    requests_per_s: float
    p99_s: float
    cpu_us_per_request: float
    cpu_percent: float
    wrk_cpu_percent: float
    other_cpu_percent: float
    errors: int  # socket errors + non-2xx responses, summed over rounds


def summarize(measurements: Sequence[Measurement]) -> Summary:
    return Summary(
        rounds=len(measurements),
        requests_per_s=statistics.median(m.requests_per_s for m in measurements),
        p99_s=statistics.median(m.p99_s for m in measurements),
        cpu_us_per_request=statistics.median(m.cpu_us_per_request for m in measurements),
        cpu_percent=statistics.median(m.cpu_percent for m in measurements),
        wrk_cpu_percent=statistics.median(m.wrk_cpu_percent for m in measurements),
        other_cpu_percent=statistics.median(m.other_cpu_percent for m in measurements),
        errors=sum(m.socket_errors + m.non_2xx for m in measurements),
    )


def summaries(results: Results, workload: Workload) -> dict[str, Summary]:
    """label -> Summary, for the contenders of ``workload`` that were measured at least once."""
    found: dict[str, Summary] = {}
    for contender in workload.contenders:
        runs = [
            m
            for m in results.measurements
            if m.workload == workload.name and m.contender == contender.label
        ]
        if runs:
            found[contender.label] = summarize(runs)
    return found


def _ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}" if baseline else "-"


def _cpu_ratio(value: float, baseline: float) -> str:
    if not baseline:
        return "-"
    ratio = value / baseline
    return f"{ratio:.2f} ({(ratio - 1) * 100:+.1f} %)"


def _cpu_split(summary: Summary) -> str:
    return (
        f"{summary.cpu_percent:.0f}/{summary.wrk_cpu_percent:.0f}/{summary.other_cpu_percent:.0f}"
    )


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# Other processes using more than this share of a core during a window make req/s and latency
# noise; CPU per request holds up better, since it is the server's own time.
BUSY_MACHINE_PERCENT = 15.0

TABLE_HEADER = (
    "workload",
    "server",
    "req/s",
    "p99 ms",
    "CPU µs/req",
    "CPU % server/wrk/other",
    "req/s ÷ base",
    "CPU/req ÷ base",
    "notes",
)


def results_table(results: Results) -> str:
    """The medians table: one row per contender of every workload, ratios to its baseline."""
    lines = [_row(TABLE_HEADER), _row("---" for _ in TABLE_HEADER)]
    for workload in results.workloads:
        found = summaries(results, workload)
        base = found.get(workload.baseline)
        for contender in workload.contenders:
            availability = results.availability[contender.kind.name]
            failures = [
                f
                for f in results.failures
                if f.workload == workload.name and f.contender == contender.label
            ]
            summary = found.get(contender.label)
            notes = []
            if not availability.installed:
                notes.append(f"missing: {availability.version}")
            if failures:
                runs = results.settings.rounds * workload.passes
                notes.append(f"failed in {len(failures)} of {runs} runs")
            if summary is None:
                cells = [workload.name, contender.label, *("-" * 6), "; ".join(notes)]
                lines.append(_row(cells))
                continue
            if summary.other_cpu_percent > BUSY_MACHINE_PERCENT:
                notes.append("busy machine: req/s and p99 unreliable")
            if summary.errors:
                notes.append(f"{summary.errors} errors/non-2xx")
            if contender.label == workload.baseline:
                notes.append("baseline")
            lines.append(
                _row(
                    [
                        workload.name,
                        contender.label,
                        f"{summary.requests_per_s:,.0f}",
                        f"{summary.p99_s * 1e3:.2f}",
                        f"{summary.cpu_us_per_request:.1f}",
                        _cpu_split(summary),
                        _ratio(summary.requests_per_s, base.requests_per_s) if base else "-",
                        _cpu_ratio(summary.cpu_us_per_request, base.cpu_us_per_request)
                        if base
                        else "-",
                        "; ".join(notes),
                    ]
                )
            )
    return "\n".join(lines)


def _rounds_table(results: Results) -> str:
    header = (
        "round",
        "workload",
        "server",
        "requests",
        "req/s",
        "p99 ms",
        "server CPU s",
        "CPU µs/req",
        "CPU % server/wrk/other",
    )
    lines = [_row(header), _row("---" for _ in header)]
    for m in results.measurements:
        cells = [
            str(m.round),
            m.workload,
            m.contender,
            str(m.requests),
            f"{m.requests_per_s:,.0f}",
            f"{m.p99_s * 1e3:.2f}",
            f"{m.cpu_s:.2f}",
            f"{m.cpu_us_per_request:.1f}",
            f"{m.cpu_percent:.0f}/{m.wrk_cpu_percent:.0f}/{m.other_cpu_percent:.0f}",
        ]
        lines.append(_row(cells))
    return "\n".join(lines)


def _commands(results: Results) -> list[str]:
    lines = []
    for workload in results.workloads:
        lines.append(f"- **{workload.name}** — {workload.description}. {workload.reading}")
        for contender in workload.contenders:
            metrics_port = "{metrics_port}" if contender.metrics else None
            command = [
                "python" if arg == sys.executable else arg
                for arg in server_command(workload.app, contender, "{port}", metrics_port)
            ]
            lines.append(f"  - {contender.label}: `{shlex.join(command)}`")
        script = "post_1048576.lua" if workload.post_size else None
        wrk = wrk_command(results.settings.wrk, "http://127.0.0.1:{port}/", 0, None)
        shown = shlex.join(wrk).replace("-d0s", "-d{duration}s")
        if script:
            shown = shown.replace("--latency", f"--latency -s {script}")
        lines.append(f"  - load: `{shown}`")
    return lines


def _host() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, Linux {platform.release()}"


def markdown(results: Results, versions: dict[str, str], date: str, cpu_count: int) -> str:
    """The whole results.md: context first, medians, how to read them, the raw rounds."""
    settings = results.settings
    busy = results.background_percent > BUSY_MACHINE_PERCENT
    out = [
        "# shardcorn benchmark results",
        "",
        f"- date: {date}",
        f"- host: {_host()}, {cpu_count} CPUs",
        "- versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        f"- rounds: {settings.rounds} (interleaved: every server once per round, A B A B"
        + "".join(
            f"; {w.name} {w.passes} times per round" for w in results.workloads if w.passes > 1
        )
        + ")"
        + (" — **quick run**" if settings.quick else ""),
        f"- measured window: {settings.duration_s} s per server per round, after a "
        f"{settings.warmup_s} s warm-up; {settings.wrk.connections} keep-alive connections, "
        f"{settings.wrk.threads} wrk thread",
        "- pinning: server `taskset -c 0`, wrk `taskset -c 1` (shards2: server on 0,1)",
        f"- background load before the run: {results.background_percent:.0f} % of one core"
        + (" — **busy machine, req/s and p99 are noisy**" if busy else ""),
        "",
        "## Medians over rounds",
        "",
        results_table(results),
        "",
        "CPU µs/req: user + system CPU time of the server process and all its descendants over "
        "the measured window, divided by the requests wrk completed in it. CPU % is of one core, "
        "over the window: server near 100 means the server's core was the limit; wrk near 100 "
        "means the load generator was; other is every other process on the machine (noise). "
        "Ratios divide by the workload's baseline row, measured in this same run.",
        "",
        "## Commands",
        "",
        *_commands(results),
    ]
    if results.failures:
        out += ["", "## Failures", ""]
        for failure in results.failures:
            out.append(f"- round {failure.round}, {failure.workload}, {failure.contender}:")
            out += ["", "  ```", *(f"  {line}" for line in failure.error.splitlines()), "  ```"]
    out += ["", "## Every round", "", _rounds_table(results), ""]
    return "\n".join(out)
