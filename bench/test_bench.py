"""Tests of the benchmark's own parts: ``python -m pytest bench``.

The parsers get wrk's and py-spy's real output formats; the process tree accounting and the
server lifecycle are tested against real processes (uvicorn stands in for any server).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from bench import apps
from bench.flatprofile import parse_raw
from bench.inprocess import request_reads
from bench.loadgen import LoadError, _response_length, run_load
from bench.procstat import ProcessGoneError, process_tree, tree_cpu_seconds
from bench.servers import UVICORN, ServerError, free_port, http_get, running
from bench.wrk import WrkError, parse_report

App = Callable[[apps.Scope, apps.Receive, apps.Send], Awaitable[None]]

WRK_REPORT = """\
Running 5s test @ http://127.0.0.1:8000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  512.00us  21.03ms   91.20%
    Req/Sec    30.61k     1.20k   32.00k    80.00%
  Latency Distribution
     50%    2.01ms
     75%  950.00us
     90%    1.02s
     99%    1.50m
  152304 requests in 5.00s, 19.03MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  30455.71
Transfer/sec:      3.81MB
"""


def test_wrk_report_numbers_and_units() -> None:
    report = parse_report(WRK_REPORT)
    assert report.requests == 152304
    assert report.duration_s == pytest.approx(5.0)
    assert report.requests_per_s == pytest.approx(30455.71)
    assert report.latency_s == pytest.approx({50.0: 2.01e-3, 75.0: 950e-6, 90.0: 1.02, 99.0: 90.0})
    assert (report.socket_errors, report.non_2xx, report.clean) == (3, 4, False)


def test_wrk_report_clean_run_has_no_error_lines() -> None:
    lines = [
        line for line in WRK_REPORT.splitlines() if "errors" not in line and "Non-2xx" not in line
    ]
    report = parse_report("\n".join(lines))
    assert (report.socket_errors, report.non_2xx, report.clean) == (0, 0, True)


def test_wrk_report_without_latency_distribution_is_refused() -> None:
    without = WRK_REPORT.split("  Latency Distribution", maxsplit=1)[0] + "Requests/sec:  1.00\n"
    with pytest.raises(WrkError, match="--latency"):
        parse_report(without)


def test_flat_profile_self_and_total() -> None:
    raw = textwrap.dedent("""\
        process 7:"python -m shardcorn";main (a.py);loop (b.py);send (c.py) 6
        process 7:"python -m shardcorn";main (a.py);loop (b.py);parse (d.py);loop (b.py) 3
        process 7:"python -m shardcorn";main (a.py) 1
        garbage line
        """)
    profile = parse_raw(raw)
    assert profile.samples == 10
    assert profile.self_samples == {"send (c.py)": 6, "loop (b.py)": 3, "main (a.py)": 1}
    assert profile.total_samples["loop (b.py)"] == 9  # recursion counted once per sample
    assert profile.total_samples["main (a.py)"] == 10


BURN_IN_CHILD = """\
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time\\nt = time.process_time()\\n"
    "while time.process_time() - t < 0.5: pass\\ntime.sleep(30)"])
print(child.pid, flush=True)
time.sleep(30)
"""


@pytest.fixture
def parent_with_busy_child() -> Iterator[subprocess.Popen[str]]:
    parent = subprocess.Popen(
        [sys.executable, "-c", BURN_IN_CHILD], stdout=subprocess.PIPE, text=True
    )
    try:
        yield parent
    finally:
        for pid in reversed(process_tree(parent.pid)):
            os.kill(pid, 9)
        parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()


def test_tree_cpu_counts_descendants(parent_with_busy_child: subprocess.Popen[str]) -> None:
    assert parent_with_busy_child.stdout is not None
    child_pid = int(parent_with_busy_child.stdout.readline())
    assert process_tree(parent_with_busy_child.pid) == [parent_with_busy_child.pid, child_pid]
    deadline = time.monotonic() + 20
    while tree_cpu_seconds(parent_with_busy_child.pid) < 0.5:  # the child burns 0.5 s, then idles
        assert time.monotonic() < deadline, "the child's CPU time never showed in the tree"
        time.sleep(0.05)


def test_tree_cpu_of_a_gone_process() -> None:
    # A pid above the largest pid_max Linux allows (2**22) can never exist.
    with pytest.raises(ProcessGoneError):
        tree_cpu_seconds(2**23)


async def _call(app: App, scope: apps.Scope, body_chunks: list[bytes]) -> list[apps.Message]:
    incoming: list[apps.Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(body_chunks) - 1}
        for i, chunk in enumerate(body_chunks)
    ]
    sent: list[apps.Message] = []

    async def receive() -> apps.Message:
        return incoming.pop(0)

    async def send(message: apps.Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_apps_answer_as_declared() -> None:
    scope: apps.Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    hello = asyncio.run(_call(apps.hello, scope, [b""]))
    assert hello[1]["body"] == b"Hello, world!"
    assert (b"content-type", b"text/plain") in hello[0]["headers"]
    big = asyncio.run(_call(apps.body64k, scope, [b""]))
    assert len(big[1]["body"]) == 65536
    echoed = asyncio.run(_call(apps.echo1m, scope, [b"ab", b"", b"c"]))
    assert echoed[1]["body"] == b"abc"
    assert (b"content-length", b"3") in echoed[0]["headers"]


def test_apps_complete_lifespan() -> None:
    events: list[apps.Message] = [
        {"type": "lifespan.startup"},
        {"type": "lifespan.shutdown"},
    ]
    sent = asyncio.run(_call_lifespan(events))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def _call_lifespan(events: list[apps.Message]) -> list[apps.Message]:
    sent: list[apps.Message] = []

    async def receive() -> apps.Message:
        return events.pop(0)

    async def send(message: apps.Message) -> None:
        sent.append(message)

    await apps.hello({"type": "lifespan"}, receive, send)
    return sent


def test_running_server_answers_and_leaves_nothing_behind() -> None:
    port = free_port()
    with running(UVICORN.command("bench.apps:hello", port), port, ready_timeout_s=30) as server:
        status, response = http_get(port)
        tree = process_tree(server.pid)
    assert status == 200
    assert response.endswith(b"Hello, world!")
    assert server.process.returncode is not None
    assert not [pid for pid in tree if os.path.exists(f"/proc/{pid}")]


def test_a_server_that_dies_is_reported_with_its_stderr() -> None:
    port = free_port()
    command = [sys.executable, "-c", "import sys; sys.exit('cannot start: no such app')"]
    with pytest.raises(ServerError, match="cannot start: no such app"), running(command, port):
        pytest.fail("an exited server must not be yielded")


def test_loadgen_frames_responses_by_content_length() -> None:
    response = bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx: y\r\n\r\nhello")
    assert _response_length(response[:10]) == -1  # the head is not in yet
    assert _response_length(response) == len(response)
    with pytest.raises(LoadError):
        _response_length(bytearray(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n"))
    with pytest.raises(LoadError):
        _response_length(bytearray(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"))


def test_loadgen_sends_exactly_the_requests_asked_for() -> None:
    port = free_port()
    with running(UVICORN.command("bench.apps:echo1m", port), port, ready_timeout_s=30):
        assert run_load("127.0.0.1", port, 10, 3, post_size=1000) > 0
        assert run_load("127.0.0.1", port, 7, 16) > 0  # fewer requests than connections


def test_hotpath_reads_split_a_post_like_uvloop() -> None:
    reads = request_reads(600 * 1024)
    assert [len(r) for r in reads[:-1]] == [256 * 1024] * 2
    assert b"".join(reads).endswith(b"x" * 1000)
    assert request_reads(None) == [b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"]
