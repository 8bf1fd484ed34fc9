"""The cross-check arithmetic, on made-up Locust tables and scrapes (no server, no Locust)."""

from __future__ import annotations

from loadtests.contract import REJECTED_BY_DESIGN, WS_CONNECT_NAME, WS_REQUEST_TYPE
from loadtests.exporter import Scrape
from loadtests.locust_run import FailureRow, LocustStats, StatsRow
from loadtests.report import (
    ExporterDeltas,
    connection_check,
    handshake_check,
    http_check,
    rejection_check,
    websocket_check,
)


def row(type_: str, name: str, requests: int, failures: int = 0) -> StatsRow:
    return StatsRow(type_, name, requests, failures, 1.0, 1, 2, 3)


def stats(*rows: StatsRow, rejected: int = 0, other_failures: int = 0) -> LocustStats:
    failures = []
    if rejected:
        failures.append(
            FailureRow(
                "GET", "/sleep?ms=50", f"CatchResponseError('{REJECTED_BY_DESIGN}')", rejected
            )
        )
    if other_failures:
        failures.append(FailureRow("GET", "/", "HTTPError('500')", other_failures))
    total = sum(r.requests for r in rows)
    return LocustStats(rows, row("", "Aggregated", total), tuple(failures), ())


def scrape(
    requests: dict[tuple[str, str], int], rejected: dict[str, int], ws: dict[str, int] | None = None
) -> Scrape:
    lines = ["# TYPE shardcorn_http_requests counter"]
    lines += [
        f'shardcorn_http_requests_total{{shard="{shard}",method="GET",code="{code}"}} {n}'
        for (shard, code), n in requests.items()
    ]
    lines.append("# TYPE shardcorn_concurrency_rejected counter")
    lines += [
        f'shardcorn_concurrency_rejected_total{{shard="{s}"}} {n}' for s, n in rejected.items()
    ]
    lines.append("# TYPE shardcorn_http_requests_in_flight gauge")
    lines.append('shardcorn_http_requests_in_flight{shard="0"} 0')
    if ws is not None:
        lines.append("# TYPE shardcorn_websocket_messages counter")
        lines += [
            f'shardcorn_websocket_messages_total{{shard="0",direction="{d}"}} {n}'
            for d, n in ws.items()
        ]
    return Scrape.parse("\n".join(lines) + "\n")


WS_3 = {"received": 3, "sent": 3}
WS_23 = {"received": 23, "sent": 23}
BEFORE = scrape({("0", "200"): 5, ("1", "200"): 7}, {"0": 1, "1": 0}, WS_3)


def test_deltas_sum_over_shards_and_ignore_the_starting_point() -> None:
    after = scrape({("0", "200"): 55, ("1", "200"): 107}, {"0": 1, "1": 0}, WS_3)
    deltas = ExporterDeltas.between(BEFORE, after)
    assert deltas.http_requests == 150
    assert deltas.http_by_shard == {"0": 50, "1": 100}
    assert deltas.http_by_code == {"200": 150}
    assert deltas.rejected == 0
    assert http_check(stats(row("GET", "/", 150)), deltas).ok
    assert not http_check(stats(row("GET", "/", 149)), deltas).ok


def test_rejections_counted_apart_from_requests() -> None:
    after = scrape({("0", "200"): 15, ("1", "200"): 7}, {"0": 31, "1": 20})
    deltas = ExporterDeltas.between(BEFORE, after)
    locust = stats(row("GET", "/sleep?ms=50", 60, failures=50), rejected=50)
    check = http_check(locust, deltas)
    assert check.ok, check.detail
    assert "apart" in check.detail
    assert rejection_check(locust, deltas).ok


def test_rejections_counted_as_503_requests_too() -> None:
    after = scrape(
        {("0", "200"): 15, ("1", "200"): 7, ("0", "503"): 30, ("1", "503"): 20},
        {"0": 31, "1": 20},
    )
    deltas = ExporterDeltas.between(BEFORE, after)
    locust = stats(row("GET", "/sleep?ms=50", 60, failures=50), rejected=50)
    check = http_check(locust, deltas)
    assert check.ok, check.detail
    assert "as requests too" in check.detail


def test_one_request_too_many_or_too_few_is_a_mismatch() -> None:
    after = scrape({("0", "200"): 15, ("1", "200"): 7}, {"0": 31, "1": 20})
    deltas = ExporterDeltas.between(BEFORE, after)
    for seen in (59, 61):
        locust = stats(row("GET", "/sleep?ms=50", seen, failures=50), rejected=50)
        assert not http_check(locust, deltas).ok
    assert not rejection_check(stats(row("GET", "/", 60), rejected=49), deltas).ok


def test_websocket_rows_are_not_http_requests() -> None:
    after = scrape({("0", "200"): 5, ("1", "200"): 7}, {"0": 1, "1": 0}, WS_23)
    deltas = ExporterDeltas.between(BEFORE, after)
    locust = stats(
        row(WS_REQUEST_TYPE, WS_CONNECT_NAME, 4),
        row(WS_REQUEST_TYPE, "/ws echo text", 15),
        row(WS_REQUEST_TYPE, "/ws echo binary", 5),
    )
    assert locust.http_requests == 0
    assert locust.ws_messages == 20
    assert http_check(locust, deltas).ok
    ws = websocket_check(locust, deltas)
    assert ws is not None
    assert ws.ok, ws.detail


def test_handshakes_counted_as_101_requests_or_not_at_all() -> None:
    locust = stats(
        row(WS_REQUEST_TYPE, WS_CONNECT_NAME, 4),
        row(WS_REQUEST_TYPE, "/ws echo text", 15),
        row("GET", "/", 8),
    )
    for upgrades, ok in ((0, True), (4, True), (3, False), (5, False)):
        after = scrape({("0", "200"): 13, ("1", "200"): 7, ("1", "101"): upgrades}, {"0": 1})
        deltas = ExporterDeltas.between(BEFORE, after)
        check = http_check(locust, deltas)
        assert check.ok, check.detail
        assert handshake_check(locust, deltas).ok is ok, upgrades


def test_websocket_check_skipped_without_the_counter() -> None:
    no_ws = scrape({("0", "200"): 5}, {"0": 0})
    deltas = ExporterDeltas.between(no_ws, no_ws)
    assert websocket_check(stats(row(WS_REQUEST_TYPE, "/ws echo text", 1)), deltas) is None


def test_failures_not_by_design_are_told_apart() -> None:
    locust = stats(row("GET", "/", 10, failures=7), rejected=4, other_failures=3)
    assert locust.rejected_by_design == 4
    assert [f.occurrences for f in locust.unexpected_failures] == [3]


def test_churn_is_one_connection_per_request() -> None:
    accepted = "# TYPE shardcorn_connections_accepted counter\n"
    before = Scrape.parse(accepted + 'shardcorn_connections_accepted_total{shard="0"} 2\n')
    after = Scrape.parse(accepted + 'shardcorn_connections_accepted_total{shard="0"} 12\n')
    deltas = ExporterDeltas.between(before, after)
    for requests, ok in ((10, True), (9, False)):
        check = connection_check(stats(row("GET", "/ Connection: close", requests)), deltas)
        assert check is not None
        assert check.ok is ok
    assert connection_check(stats(row("GET", "/", 1)), ExporterDeltas.between(after, after)) is None
