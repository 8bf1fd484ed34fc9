"""The cross-checks between Locust's counts and the exporter's, and the printed report."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtests.exporter import (
    CONNECTIONS,
    HTTP_REQUESTS,
    IN_FLIGHT,
    REJECTED,
    WS_MESSAGES,
    WS_RECEIVED,
    WS_SENT,
    Scrape,
    counter_delta,
    label_deltas,
    moved_counters,
)
from loadtests.locust_run import LocustStats, StatsRow
from loadtests.scenarios import Scenario

# The status of an accepted WebSocket handshake, as the exporter's ``code`` label spells it.
SWITCHING_PROTOCOLS = "101"


@dataclass(frozen=True)
class ExporterDeltas:
    """How far the exporter's counters moved between the quiet scrape before the run and the
    quiet scrape after it."""

    http_requests: int
    http_by_code: dict[str, int]
    http_by_shard: dict[str, int]
    rejected: int
    rejected_by_shard: dict[str, int]
    # None where the exporter has no such counter (yet): the check is then reported as skipped.
    ws_by_direction: dict[str, int] | None
    # Every other shardcorn counter that moved, for the reader (connections, keep-alive, ...).
    others: dict[str, float] = field(default_factory=dict)

    @classmethod
    def between(cls, before: Scrape, after: Scrape) -> ExporterDeltas:
        has_ws = after.has(WS_MESSAGES)
        return cls(
            http_requests=counter_delta(before.total(HTTP_REQUESTS), after.total(HTTP_REQUESTS)),
            http_by_code=label_deltas(before, after, HTTP_REQUESTS, "code"),
            http_by_shard=label_deltas(before, after, HTTP_REQUESTS, "shard"),
            rejected=counter_delta(before.total(REJECTED), after.total(REJECTED)),
            rejected_by_shard=label_deltas(before, after, REJECTED, "shard"),
            ws_by_direction=(
                label_deltas(before, after, WS_MESSAGES, "direction") if has_ws else None
            ),
            others=moved_counters(before, after, skip=(HTTP_REQUESTS, REJECTED, WS_MESSAGES)),
        )


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    # A cross-check compares Locust with the exporter; a plain check looks at one of them.
    cross: bool = False


def http_check(stats: LocustStats, deltas: ExporterDeltas) -> Check:
    """Locust's HTTP requests against the exporter's, under either way of counting a 503 from
    the concurrency limit.

    * apart: a rejected request never reaches the request counter, only
      ``concurrency_rejected_total``; then Locust == requests + rejected.
    * as requests too: it is counted in both, with code 503; then Locust == requests, and
      the 503s among the requests cover the rejections.

    With rejections, at most one of the two can hold, so the check also says which one the
    server follows. Without rejections both read Locust == requests.

    WebSocket handshakes (code 101) are left out of "requests": Locust counts them as ``WS``
    events, not HTTP requests; :func:`handshake_check` compares them.
    """
    seen = stats.http_requests
    counted = deltas.http_requests - deltas.http_by_code.get(SWITCHING_PROTOCOLS, 0)
    rejected = deltas.rejected
    served_503 = deltas.http_by_code.get("503", 0)
    what = "http_requests" if counted == deltas.http_requests else "http_requests (less 101s)"
    arithmetic = f"Locust {seen} == {what} {counted} + concurrency_rejected {rejected}"
    if rejected == 0:
        return Check("http", seen == counted, f"Locust {seen} == {what} {counted}", True)
    if seen == counted + rejected:
        return Check("http", True, f"{arithmetic} (rejections counted apart from requests)", True)
    if seen == counted and served_503 >= rejected:
        detail = (
            f"Locust {seen} == {what} {counted}, whose {served_503} 503s include the "
            f"{rejected} rejections (rejections counted as requests too)"
        )
        return Check("http", True, detail, True)
    return Check("http", False, f"{arithmetic} does not hold, nor Locust == {what}", True)


def handshake_check(stats: LocustStats, deltas: ExporterDeltas) -> Check:
    """Locust's accepted WebSocket handshakes against the exporter's 101 responses.

    Either way of counting a handshake passes, and the check says which holds: as an HTTP
    request with code 101 (101s == handshakes), or not at all (no 101s).
    """
    accepted = stats.ws_handshakes
    upgrades = deltas.http_by_code.get(SWITCHING_PROTOCOLS, 0)
    detail = f"Locust handshakes {accepted} == http_requests code 101 {upgrades}"
    if upgrades == accepted:
        return Check("handshakes", True, f"{detail} (counted as HTTP requests)", True)
    if upgrades == 0:
        return Check("handshakes", True, "not counted as HTTP requests by the exporter", True)
    return Check("handshakes", False, detail, True)


def rejection_check(stats: LocustStats, deltas: ExporterDeltas) -> Check:
    """The 503s Locust saw marked as by design == the exporter's rejections."""
    seen = stats.rejected_by_design
    detail = f"Locust 503s by design {seen} == concurrency_rejected {deltas.rejected}"
    return Check("rejections", seen == deltas.rejected, detail, True)


def websocket_check(stats: LocustStats, deltas: ExporterDeltas) -> Check | None:
    """Each Locust echo is one message the server received and one it sent."""
    if deltas.ws_by_direction is None:
        return None
    moved = deltas.ws_by_direction
    sent = stats.ws_messages
    ok = set(moved) <= {WS_RECEIVED, WS_SENT} and (
        moved.get(WS_RECEIVED, 0) == sent == moved.get(WS_SENT, 0)
    )
    detail = f"Locust echoes {sent} == websocket_messages " + (
        " ".join(f"{direction}={n}" for direction, n in moved.items()) or "(no movement)"
    )
    return Check("websocket", ok, detail, True)


def connection_check(stats: LocustStats, deltas: ExporterDeltas) -> Check | None:
    """With ``Connection: close`` on every request, each request is one accepted connection."""
    if CONNECTIONS not in deltas.others:
        return None
    accepted = int(deltas.others[CONNECTIONS])
    detail = f"Locust requests {stats.http_requests} == connections_accepted {accepted}"
    return Check("connections", accepted == stats.http_requests, detail, True)


def run_checks(
    scenario: Scenario, stats: LocustStats, deltas: ExporterDeltas, stop_problem: str | None
) -> list[Check]:
    """Every check of one run, in the order the report prints them."""
    checks = [http_check(stats, deltas), rejection_check(stats, deltas)]
    if scenario.expects_rejections:
        checks.append(
            Check(
                "limit reached",
                stats.rejected_by_design > 0,
                f"{stats.rejected_by_design} requests were turned away with 503",
            )
        )
    if scenario.connection_per_request:
        connections = connection_check(stats, deltas)
        if connections is not None:
            checks.append(connections)
    if scenario.uses_websocket:
        checks.append(handshake_check(stats, deltas))
        ws = websocket_check(stats, deltas)
        if ws is not None:
            checks.append(ws)
    unexpected = sum(f.occurrences for f in stats.unexpected_failures)
    checks.append(Check("failures", unexpected == 0, f"{unexpected} failures not by design"))
    checks.append(
        Check("user errors", not stats.exceptions, f"{len(stats.exceptions)} kinds of exception")
    )
    stopped = stop_problem or "stopped on SIGTERM, nothing left behind"
    checks.append(Check("server stop", stop_problem is None, stopped))
    return checks


def _ms(value: int | None) -> str:
    return "-" if value is None else str(value)


def _row(row: StatsRow) -> str:
    return (
        f"  {row.type:<5} {row.name:<28} {row.requests:>9} {row.failures:>8} {row.rps:>10.1f}"
        f" {_ms(row.p50):>6} {_ms(row.p95):>6} {_ms(row.p99):>6}"
    )


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{key}={value}" for key, value in counts.items()) or "-"


def render(
    *,
    title: str,
    command: str,
    stats: LocustStats,
    deltas: ExporterDeltas,
    after: Scrape,
    checks: list[Check],
    notes: list[str],
) -> str:
    """The report as text. Its last line is ``result: PASS`` or ``result: FAIL``."""
    lines = [title, f"server: {command}", ""]
    lines.append(
        f"  {'type':<5} {'name':<28} {'requests':>9} {'failures':>8} {'req/s':>10}"
        f" {'p50':>6} {'p95':>6} {'p99':>6}  (ms)"
    )
    lines.extend(_row(row) for row in stats.rows)
    lines.append(_row(stats.aggregated))
    lines.append("")
    lines.append(
        f"Locust: {stats.http_requests} HTTP requests, {stats.ws_messages} WebSocket echoes, "
        f"{stats.total_failures} failures ({stats.rejected_by_design} of them 503s by design)"
    )
    lines.extend(
        f"  failure: {f.occurrences} x {f.method} {f.name}: {f.error}"
        for f in stats.unexpected_failures
    )
    lines.extend(f"  user error: {e}" for e in stats.exceptions)
    lines.append(
        f"exporter: {HTTP_REQUESTS} +{deltas.http_requests}"
        f" (by code: {_counts(deltas.http_by_code)}; by shard: {_counts(deltas.http_by_shard)})"
    )
    lines.append(
        f"exporter: {REJECTED} +{deltas.rejected} (by shard: {_counts(deltas.rejected_by_shard)})"
    )
    if deltas.ws_by_direction is not None:
        lines.append(f"exporter: {WS_MESSAGES} {_counts(deltas.ws_by_direction)}")
    lines.extend(f"exporter: {name} +{value:g}" for name, value in deltas.others.items())
    lines.append(f"exporter: {IN_FLIGHT} {after.total(IN_FLIGHT):g} when scraped after the run")
    lines.append("")
    lines.extend(
        f"cross-check {c.name}: {'OK' if c.ok else 'MISMATCH'}: {c.detail}"
        if c.cross
        else f"check {c.name}: {'OK' if c.ok else 'FAIL'}: {c.detail}"
        for c in checks
    )
    lines.extend(f"note: {note}" for note in notes)
    lines.append(f"result: {'PASS' if all(c.ok for c in checks) else 'FAIL'}")
    return "\n".join(lines)
