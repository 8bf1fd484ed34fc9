"""Reading Locust's final CSV tables, and Locust's run-time syntax (no Locust process here:
importing Locust would monkey-patch the test process with gevent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.contract import REJECTED_BY_DESIGN
from loadtests.locust_run import LocustError, read_stats, run_time_seconds

PERCENTILES = "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
STATS = f"""\
Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,{PERCENTILES}
GET,/sleep?ms=50,100,90,2,6.5,0.4,60,19.0,33.3,30.0,2,3,3,3,4,51,52,53,55,60,60
WS,/ws connect,0,0,0,0,0,0,0,0,0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A
,Aggregated,100,90,2,6.5,0.4,60,19.0,33.3,30.0,2,3,3,3,4,51,52,53,55,60,60
"""
FAILURES = f"""\
Method,Name,Error,Occurrences,First Seen,Last Seen
GET,/sleep?ms=50,CatchResponseError('{REJECTED_BY_DESIGN}'),88,,
GET,/sleep?ms=50,"RemoteDisconnected('closed, without a response')",2,,
"""
EXCEPTIONS = "Count,Message,Traceback,Nodes\n"


def write(tmp_path: Path, stats: str = STATS) -> Path:
    prefix = tmp_path / "locust"
    (tmp_path / "locust_final_stats.csv").write_text(stats)
    (tmp_path / "locust_final_failures.csv").write_text(FAILURES)
    (tmp_path / "locust_final_exceptions.csv").write_text(EXCEPTIONS)
    return prefix


def test_read_stats(tmp_path: Path) -> None:
    s = read_stats(write(tmp_path))
    assert [r.name for r in s.rows] == ["/sleep?ms=50", "/ws connect"]
    assert s.aggregated.requests == 100
    assert (s.aggregated.p50, s.aggregated.p95, s.aggregated.p99) == (2, 51, 53)
    assert s.rows[1].p50 is None
    assert s.http_requests == 100
    assert s.rejected_by_design == 88
    assert [f.occurrences for f in s.unexpected_failures] == [2]
    assert s.exceptions == ()


def test_missing_or_truncated_tables(tmp_path: Path) -> None:
    with pytest.raises(LocustError):
        read_stats(tmp_path / "nothing")
    with pytest.raises(LocustError, match="Aggregated"):
        read_stats(write(tmp_path, STATS.rsplit(",Aggregated", 1)[0]))


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("10s", 10), ("1m30s", 90), ("1h", 3600), ("2m", 120)]
)
def test_run_time(text: str, seconds: int) -> None:
    assert run_time_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "s", "1.5m", "-3"])
def test_bad_run_time(text: str) -> None:
    with pytest.raises(ValueError):
        run_time_seconds(text)
