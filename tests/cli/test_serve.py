"""One shard as a user runs it: binding, loops, signals, graceful shutdown, exit codes, run().

Every server here is a child process (``python -m shardcorn`` or a script calling
``shardcorn.run``), stopped by a signal; ports come from its log, never guessed.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

import shardcorn
from shardcorn.testing import ProcessServer, serve_process, stop_process

TIMEOUT = 20

SLOW_APP = """
    import asyncio
    import sys

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        ms = int(scope["query_string"] or b"0")
        print(f"APP: sleeping {ms}", file=sys.stderr, flush=True)  # the test waits for this
        await asyncio.sleep(ms / 1000)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"slept %d" % ms})
"""


@pytest.fixture
def slow_app(tmp_path: Path) -> list[str]:
    (tmp_path / "slow_app.py").write_text(textwrap.dedent(SLOW_APP))
    return ["slow_app:app", "--app-dir", str(tmp_path)]


def raw_connection(server: ProcessServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Read until the server closes the connection (every recv has the socket's timeout)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_port_0_is_logged_and_served() -> None:
    with serve_process(["shardcorn.demo:app", "--port", "0"]) as server:
        assert server.port > 0
        line = server.read_until("running on")
        assert f"http://127.0.0.1:{server.port}" in line
        assert httpx.get(server.url, timeout=TIMEOUT).text == "Hello, world!"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_loop_choice(loop: str) -> None:
    with serve_process(["shardcorn.demo:app", "--port", "0", "--loop", loop]) as server:
        assert f"1 shard, {loop}" in server.read_until("running on")
        assert httpx.get(server.url, timeout=TIMEOUT).status_code == 200


def test_ipv6() -> None:
    with serve_process(["shardcorn.demo:app", "--host", "::1", "--port", "0"]) as server:
        assert server.host == "::1"
        assert f"http://[::1]:{server.port}" in server.read_until("running on")
        response = httpx.get(f"http://[::1]:{server.port}/json", timeout=TIMEOUT)
        assert response.json()["message"] == "Hello, world!"


def test_backlog() -> None:
    with serve_process(["shardcorn.demo:app", "--port", "0", "--backlog", "17"]) as server:
        listing = subprocess.run(
            ["ss", "-ltnH", f"sport = :{server.port}"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        ).stdout
    # For a listening socket, ss shows the backlog in the Send-Q column.
    assert listing.split()[2] == "17", listing


def test_address_in_use_is_one_line_and_exit_1() -> None:
    with serve_process(["shardcorn.demo:app", "--port", "0"]) as first:
        result = subprocess.run(
            [sys.executable, "-m", "shardcorn", "shardcorn.demo:app", "--port", str(first.port)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert httpx.get(first.url, timeout=TIMEOUT).status_code == 200  # still serving alone
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [f"ERROR:    cannot bind 127.0.0.1:{first.port}: address already in use"]


@pytest.mark.parametrize(
    ("host", "needle"),
    [("no-such-host.invalid", "cannot resolve host"), ("192.0.2.1", "no such address")],
)
def test_bad_host_is_one_line_and_exit_1(host: str, needle: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shardcorn", "shardcorn.demo:app", "--host", host, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_failed_lifespan_startup_exits_3_and_serves_nothing(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(
        textwrap.dedent("""
        async def app(scope, receive, send):
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
    """)
    )
    args = ["failing:app", "--app-dir", str(tmp_path), "--port", "0"]
    with serve_process(args, ready=False) as server:
        code = server.wait(TIMEOUT)
    assert code == 3
    assert "Application startup failed: database unreachable" in server.log
    assert "running on" not in server.log


def test_lifespan_on_with_an_app_that_raises_exits_3(tmp_path: Path) -> None:
    (tmp_path / "nolife.py").write_text(
        textwrap.dedent("""
        async def app(scope, receive, send):
            assert scope["type"] == "http", "no lifespan here"
    """)
    )
    args = ["nolife:app", "--app-dir", str(tmp_path), "--port", "0", "--lifespan", "on"]
    with serve_process(args, ready=False) as server:
        assert server.wait(TIMEOUT) == 3
    assert "Application startup failed" in server.log
    assert "AssertionError: no lifespan here" in server.log


def test_signal_during_a_startup_that_never_ends(tmp_path: Path) -> None:
    (tmp_path / "stuck.py").write_text(
        textwrap.dedent("""
        import asyncio

        async def app(scope, receive, send):
            await receive()
            await asyncio.sleep(3600)  # a startup that hangs (a database that never answers)
    """)
    )
    args = ["stuck:app", "--app-dir", str(tmp_path), "--port", "0"]
    with serve_process(args, ready=False) as server:
        server.read_until("Waiting for application startup.")
        server.send_signal(signal.SIGTERM)
        assert server.wait(TIMEOUT) == 0
    assert "Stopped during application startup." in server.log
    assert "running on" not in server.log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_gracefully_with_exit_0(slow_app: list[str], signum: int) -> None:
    with serve_process([*slow_app, "--port", "0"]) as server:
        idle = raw_connection(server)
        idle.sendall(b"GET /?0 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert idle.recv(65536).endswith(b"slept 0")
        busy = raw_connection(server)
        busy.sendall(b"GET /?700 HTTP/1.1\r\nHost: a\r\n\r\n")
        server.read_until("APP: sleeping 700")
        started = time.monotonic()
        server.send_signal(signum)
        assert read_all(idle) == b""  # the idle keep-alive connection is closed at once
        assert time.monotonic() - started < 0.6
        response = read_all(busy)  # the request in flight finishes
        assert response.startswith(b"HTTP/1.1 200 OK") and response.endswith(b"slept 700")
        assert b"connection: close" in response
        assert server.wait(TIMEOUT) == 0
        idle.close()
        busy.close()
    log = server.log
    assert f"Received {signal.Signals(signum).name}" in log
    assert "Waiting for application shutdown." in log
    assert "Application shutdown complete." in log
    assert "Finished server process" in log


def test_graceful_shutdown_timeout_cancels(slow_app: list[str]) -> None:
    args = [*slow_app, "--port", "0", "--timeout-graceful-shutdown", "0.3"]
    with serve_process(args) as server:
        busy = raw_connection(server)
        busy.sendall(b"GET /?30000 HTTP/1.1\r\nHost: a\r\n\r\n")
        server.read_until("APP: sleeping 30000")
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert read_all(busy) == b""  # cancelled: closed without a response
        assert server.wait(TIMEOUT) == 0
        assert time.monotonic() - started < 5
        busy.close()
    assert "still busy after 0.3s: cancelling" in server.log
    assert "Application shutdown complete." in server.log


def test_second_sigint_forces_exit(slow_app: list[str]) -> None:
    with serve_process([*slow_app, "--port", "0"]) as server:
        busy = raw_connection(server)
        busy.sendall(b"GET /?30000 HTTP/1.1\r\nHost: a\r\n\r\n")
        server.read_until("APP: sleeping 30000")
        server.send_signal(signal.SIGINT)
        server.read_until("shutting down gracefully")
        started = time.monotonic()
        server.send_signal(signal.SIGINT)
        code = server.wait(TIMEOUT)
        assert time.monotonic() - started < 5
        busy.close()
    assert code != 0
    assert "forcing exit" in server.log


def test_new_connections_refused_during_graceful_shutdown(slow_app: list[str]) -> None:
    with serve_process([*slow_app, "--port", "0"]) as server:
        busy = raw_connection(server)
        busy.sendall(b"GET /?800 HTTP/1.1\r\nHost: a\r\n\r\n")
        server.read_until("APP: sleeping 800")
        server.send_signal(signal.SIGTERM)
        server.read_until("shutting down gracefully")
        # The listener closes on the loop's next turn: until then a connection may still be
        # accepted; after, connections are refused.
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert time.monotonic() < deadline, "new connections were still accepted"
            try:
                late = raw_connection(server)
            except ConnectionRefusedError:
                break
            try:
                late.sendall(b"GET /?0 HTTP/1.1\r\nHost: a\r\n\r\n")
                answer = read_all(late)
            except (BrokenPipeError, ConnectionResetError):
                answer = b""
            finally:
                late.close()
            # Either closed unanswered, or answered in full (when accepted and served before
            # the shutdown began): never a broken response.
            assert answer == b"" or (
                answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nslept 0")
            )
        assert read_all(busy).endswith(b"slept 800")
        assert server.wait(TIMEOUT) == 0
        busy.close()


def test_limit_max_requests_exits_0(slow_app: list[str]) -> None:
    with serve_process([*slow_app, "--port", "0", "--limit-max-requests", "2"]) as server:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            assert client.get("/?0").status_code == 200
            assert client.get("/?0").headers["connection"] == "close"
        assert server.wait(TIMEOUT) == 0
    assert "--limit-max-requests" in server.log


RUN_SCRIPT = """
    import sys
    import shardcorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"object app"})

    if __name__ == "__main__":
        target = app if sys.argv[1] == "object" else "shardcorn.demo:app"
        shardcorn.run(target, port=0, log_level="info", lifespan="auto")
        print("run() returned", file=sys.stderr, flush=True)
"""


@pytest.mark.parametrize(("kind", "body"), [("object", "object app"), ("string", "Hello, world!")])
def test_run_api(tmp_path: Path, kind: str, body: str) -> None:
    script = tmp_path / "serve_it.py"
    script.write_text(textwrap.dedent(RUN_SCRIPT))
    proc = subprocess.Popen(
        [sys.executable, str(script), kind],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    server = ProcessServer(proc)
    try:
        line = server.read_until("running on", TIMEOUT)
        port = int(line.rsplit(":", 1)[1].split()[0])
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=TIMEOUT).text == body
        proc.send_signal(signal.SIGTERM)
        assert server.wait(TIMEOUT) == 0
    finally:
        stop_process(proc)
    assert "run() returned" in server.log


def test_run_api_raises_system_exit_on_failure() -> None:
    code = (
        "import shardcorn, sys\n"
        "try:\n"
        "    shardcorn.run('no_such_module_abc:app', port=0)\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.stdout.strip() == "exit 1"


def test_run_api_rejects_unknown_settings() -> None:
    with pytest.raises(TypeError, match="prot"):
        shardcorn.run("shardcorn.demo:app", prot=8000)


def test_concurrent_requests_in_a_process() -> None:
    with serve_process(["shardcorn.demo:app", "--port", "0"]) as server:
        results: list[int] = []

        def hit() -> None:
            with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
                results.extend(client.get("/sleep?ms=50").status_code for _ in range(3))

        threads = [threading.Thread(target=hit) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert results == [200] * 15
