"""A Locust plugin (no users): write the *final* statistics as CSV when Locust quits.

Locust's ``--csv`` files are rewritten by a background greenlet once a second and never once
more at shutdown, so they miss up to a second of requests, plus everything users finish
during ``--stop-timeout`` (locustio/locust#1806, #2299). An exact cross-check cannot use
them. This plugin listens for the ``quit`` event, which fires after every user has stopped,
and writes the same three tables with Locust's own ``StatsCSV``, beside the others:
``PREFIX_final_stats.csv``, ``PREFIX_final_failures.csv``, ``PREFIX_final_exceptions.csv``.

The runner loads it next to the scenario: ``locust -f SCENARIO.py,final_csv.py --csv PREFIX``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from typing import Any

from locust import events
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, CSVWriter, StatsCSV

from loadtests.contract import FINAL_CSV_SUFFIX


def _on_init(environment: Environment, **_kwargs: Any) -> None:
    options = environment.parsed_options
    prefix: str | None = getattr(options, "csv_prefix", None) if options else None
    if not prefix:
        return

    def write_final(**_kwargs: Any) -> None:
        tables = StatsCSV(environment, PERCENTILES_TO_REPORT)
        writers: dict[str, Callable[[CSVWriter], None]] = {
            "stats": tables.requests_csv,
            "failures": tables.failures_csv,
            "exceptions": tables.exceptions_csv,
        }
        for kind, write in writers.items():
            with open(f"{prefix}{FINAL_CSV_SUFFIX}_{kind}.csv", "w", newline="") as f:
                write(csv.writer(f))

    # Locust's EventHook.add_listener has no annotations.
    environment.events.quit.add_listener(write_final)  # type: ignore[no-untyped-call]


events.init.add_listener(_on_init)  # type: ignore[no-untyped-call]
