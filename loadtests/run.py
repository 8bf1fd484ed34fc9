"""One command: start shardcorn, drive it with Locust, check Locust against the exporter.

    python -m loadtests.run --scenario hello --shards 2 --users 20 --spawn-rate 10 --run-time 10s

Exit status: 0 every check passed; 1 a check failed (a failure not by design, or Locust and
the exporter disagree); 2 bad options; 3 the run itself broke (the server did not start or go
quiet, Locust did not finish). The server is stopped in every case.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtests.exporter import WS_MESSAGES, Exporter, ExporterError, Scrape
from loadtests.locust_run import (
    LocustError,
    LocustOptions,
    LocustStats,
    locust_argv,
    read_stats,
    run_locust,
    run_time_seconds,
)
from loadtests.report import ExporterDeltas, render, run_checks
from loadtests.scenarios import SCENARIOS, Scenario
from loadtests.server import (
    DEMO_APP,
    HOST,
    SERVER_CMD_ENV,
    Server,
    ServerError,
    default_server_cmd,
    free_ports,
    server_argv,
)

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_BROKEN = 0, 1, 2, 3

# Bounds that keep a run a test and not a siege: loopback only, on a 2-core machine, so a few
# hundred gevent users already saturate Locust's one core, and ten minutes is past any useful
# run of the scenarios here.
MAX_USERS = 500
MAX_RUN_TIME = 600
MAX_SHARDS = 64
# Locust's own start-up and CSV writing, on top of the run time and the stop timeout.
LOCUST_OVERHEAD = 60


@dataclass(frozen=True)
class Outcome:
    stats: LocustStats
    deltas: ExporterDeltas
    after: Scrape
    stop_problem: str | None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description="Load-test shardcorn with Locust and cross-check the exporter.",
        epilog="scenarios: " + "; ".join(f"{s.name}: {s.summary}" for s in SCENARIOS.values()),
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="hello")
    parser.add_argument("--shards", type=int, default=2, help="server shards (default 2)")
    parser.add_argument("--users", type=int, default=20, help="Locust users (default 20)")
    parser.add_argument("--spawn-rate", type=float, default=10, help="users/s (default 10)")
    parser.add_argument("--run-time", default="10s", help="Locust run time (default 10s)")
    parser.add_argument(
        "--server-cmd",
        default=None,
        help=f"what starts the server, before the app and options (default: ${SERVER_CMD_ENV} "
        "or 'python -m shardcorn')",
    )
    parser.add_argument("--app", default=DEMO_APP, help=f"the ASGI app (default {DEMO_APP})")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more server argument, after the scenario's own (repeatable)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long the server may take to serve GET / and /metrics (default 30)",
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long the server may take to finish in-flight requests (default 10)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=int,
        default=10,
        metavar="SECONDS",
        help="how long Locust lets users finish their task at the end (default 10)",
    )
    parser.add_argument(
        "--keep-dir",
        type=Path,
        default=None,
        help="write Locust's CSV files and the server log here, and keep them",
    )
    args = parser.parse_args(argv)
    try:
        seconds = run_time_seconds(args.run_time)
    except ValueError as exc:
        parser.error(str(exc))
    if not 1 <= seconds <= MAX_RUN_TIME:
        parser.error(f"--run-time must be between 1s and {MAX_RUN_TIME}s")
    if not 1 <= args.users <= MAX_USERS:
        parser.error(f"--users must be between 1 and {MAX_USERS}")
    if not 1 <= args.shards <= MAX_SHARDS:
        parser.error(f"--shards must be between 1 and {MAX_SHARDS}")
    if args.spawn_rate <= 0:
        parser.error("--spawn-rate must be positive")
    if not 0 <= args.stop_timeout <= MAX_RUN_TIME:
        parser.error(f"--stop-timeout must be between 0 and {MAX_RUN_TIME}")
    scenario = SCENARIOS[args.scenario]
    if args.users < scenario.min_users(args.shards):
        parser.error(
            f"the {scenario.name} scenario needs at least {scenario.min_users(args.shards)} users "
            f"with {args.shards} shards: fewer may never go over the per-shard limit"
        )
    args.run_seconds = seconds
    args.server_cmd = shlex.split(args.server_cmd) if args.server_cmd else default_server_cmd()
    return args


def run_scenario(
    args: argparse.Namespace,
    scenario: Scenario,
    workdir: Path,
    server: Server,
    ports: tuple[int, int],
) -> Outcome:
    """The run proper; the caller owns ``server`` and stops it whatever happens here."""
    port, metrics_port = ports
    base_url = f"http://{HOST}:{port}"
    csv_prefix = workdir / "locust"
    options = LocustOptions(
        host=base_url,
        users=args.users,
        spawn_rate=args.spawn_rate,
        run_time=args.run_time,
        stop_timeout=args.stop_timeout,
    )
    with Exporter(f"http://{HOST}:{metrics_port}/metrics") as exporter:
        server.start()
        server.wait_ready(base_url, exporter, args.ready_timeout)
        before = exporter.wait_quiet(args.quiet_timeout)
        run_locust(
            locust_argv(scenario, options, csv_prefix),
            cwd=workdir,
            timeout=args.run_seconds + args.stop_timeout + LOCUST_OVERHEAD,
        )
        server.check_alive()
        # Locust has exited: every request it counted has been answered, and no more come.
        after = exporter.wait_quiet(args.quiet_timeout)
    server.stop()
    deltas = ExporterDeltas.between(before, after)
    return Outcome(read_stats(csv_prefix), deltas, after, server.stop_problem)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # SystemExit unwinds through the ``finally`` blocks that stop Locust and the server; the
    # default action would end the runner at once and leave both running.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    scenario = SCENARIOS[args.scenario]
    with tempfile.TemporaryDirectory(prefix="shardcorn-loadtest-") as tmp:
        workdir: Path = args.keep_dir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        port, metrics_port = free_ports(2)
        command = server_argv(
            args.server_cmd,
            app=args.app,
            port=port,
            shards=args.shards,
            metrics_port=metrics_port,
            extra=(*scenario.server_args, *args.server_arg),
        )
        server = Server(command, workdir / "server.log")
        try:
            outcome = run_scenario(args, scenario, workdir, server, (port, metrics_port))
        except (ServerError, ExporterError, LocustError) as exc:
            server.stop()
            print(f"error: {exc}\nserver: {shlex.join(command)}", file=sys.stderr)
            _print_log(server)
            return EXIT_BROKEN
        finally:
            # Also on KeyboardInterrupt or a bug here: the server never outlives the runner.
            server.stop()
        deltas = outcome.deltas
        checks = run_checks(scenario, outcome.stats, deltas, outcome.stop_problem)
        passed = all(c.ok for c in checks)
        if not passed:
            _print_log(server)
    notes = []
    if scenario.uses_websocket and deltas.ws_by_direction is None:
        notes.append(f"the exporter has no {WS_MESSAGES}: the WebSocket cross-check was skipped")
    title = (
        f"shardcorn load test: scenario {scenario.name} ({scenario.summary}); "
        f"{args.shards} shards, {args.users} users at {args.spawn_rate:g}/s for {args.run_time}"
    )
    print(
        render(
            title=title,
            command=shlex.join(command),
            stats=outcome.stats,
            deltas=deltas,
            after=outcome.after,
            checks=checks,
            notes=notes,
        )
    )
    return EXIT_PASS if passed else EXIT_FAIL


def _print_log(server: Server) -> None:
    log = server.log_tail()
    if log:
        print(f"server log (last lines):\n{log}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
