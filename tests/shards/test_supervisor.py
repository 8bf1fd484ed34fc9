"""The supervisor, end to end: ``python -m shardcorn --shards 2`` on real sockets, real signals.

Every test that makes sense in both modes runs in both (``mode``); SIGKILL and SIGSTOP only
exist for process shards, and a blocked loop stands in for a hung thread shard. Shards are told
apart by the token their own lifespan startup put in their state (``shardapp``'s ``/who``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shardcorn.testing import ProcessServer, serve_process
from tests.shards.helpers import HERE, get, log_lines, serve_shards, shard_args, spread, who
from tests.shards.load import Load

pytestmark = pytest.mark.slow

MODES = ["process", "thread"]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def child_pids(server: ProcessServer) -> set[int]:
    """The launcher's shard processes (its multiprocessing resource tracker excluded)."""
    pids: set[int] = set()
    for task in os.listdir(f"/proc/{server.proc.pid}/task"):
        with open(f"/proc/{server.proc.pid}/task/{task}/children") as fh:
            pids.update(int(pid) for pid in fh.read().split())
    shards: set[int] = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"resource_tracker" not in fh.read():
                    shards.add(pid)
        except OSError:
            continue
    return shards


def in_parallel(calls: list[Callable[[], tuple[int, bytes]]]) -> list[tuple[int, bytes]]:
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result(timeout=60) for future in futures]


def test_two_shards_share_fresh_connections(mode: str) -> None:
    with serve_shards(mode) as server:
        assert f"(2 shards, {mode}, " in log_lines(server, "running on")[0]
        counts = spread(server, 400)
        assert len(counts) == 2, counts  # two shards, each with its own lifespan state
        for count in counts.values():
            assert 0.35 <= count / 400 <= 0.65, counts
        assert len(log_lines(server, "Application startup complete", count=2)) == 2
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


def test_sighup_rolling_restart_under_load_fails_nothing(mode: str) -> None:
    with serve_shards(mode) as server:
        before = set(spread(server, 60))
        with Load(server.host, server.port, keepalive=4, fresh=4) as load:
            load.wait_requests(300)
            server.send_signal(signal.SIGHUP)
            log_lines(server, "Rolling restart complete", timeout=40)
            load.wait_requests(300)
        result = load.result
        assert result.failed == 0, result.errors
        assert result.retried == 0  # not even a keep-alive connection closed under a request
        assert len(log_lines(server, r"Shard \d replaced \(reload\)", count=2)) == 2
        after = set(spread(server, 60))
        assert len(after) == 2 and not after & before
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


def test_sigterm_lets_requests_in_flight_finish(mode: str) -> None:
    with serve_shards(mode, "--timeout-graceful-shutdown", "10") as server:
        calls = [(lambda i=i: get(server, f"/sleep?ms=1500&id={i}", timeout=20)) for i in range(8)]
        with ThreadPoolExecutor(len(calls)) as pool:
            futures = [pool.submit(call) for call in calls]
            for i in range(8):
                log_lines(server, f"sleep-start {i}$")
            server.send_signal(signal.SIGTERM)
            answers = [future.result(timeout=30) for future in futures]
        assert answers == [(200, b"slept")] * 8
        assert server.wait(30) == 0
        assert "stopping every shard gracefully" in server.log


def test_second_signal_forces_the_stop(mode: str) -> None:
    with (
        serve_shards(mode, "--timeout-graceful-shutdown", "60") as server,
        ThreadPoolExecutor(1) as pool,
    ):
        future = pool.submit(get, server, "/sleep?ms=30000&id=long", 40)
        log_lines(server, "sleep-start long")
        started = time.monotonic()
        server.send_signal(signal.SIGINT)
        log_lines(server, "stopping every shard gracefully")
        server.send_signal(signal.SIGINT)
        assert server.wait(20) == 1
        assert time.monotonic() - started < 15
        with pytest.raises(OSError):
            future.result(timeout=20)


@pytest.mark.parametrize("mode", ["process"])
def test_sigkill_of_a_shard_fails_only_its_requests_and_it_is_replaced(mode: str) -> None:
    with serve_shards(mode) as server:
        victim = int(who(server)["pid"])
        assert victim in child_pids(server)
        with Load(server.host, server.port, keepalive=4, fresh=4) as load:
            load.wait_requests(300)
            os.kill(victim, signal.SIGKILL)
            log_lines(server, r"Shard \d replaced \(crash\)", timeout=30)
            load.wait_requests(300)
        result = load.result
        # At most what the killed shard had in flight: one request per client at a time.
        assert result.failed + result.retried <= 8, (result.failed, result.retried, result.errors)
        assert "was killed by SIGKILL; replacing it" in server.log
        pids = {int(who(server)["pid"]) for _ in range(60)}
        assert victim not in pids and len(child_pids(server)) == 2
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


@pytest.mark.parametrize("mode", ["process"])
def test_a_stopped_process_fails_its_health_check_and_its_queue_is_served(mode: str) -> None:
    with serve_shards(mode, "--timeout-worker-healthcheck", "1") as server:
        victim = int(who(server)["pid"])
        os.kill(victim, signal.SIGSTOP)
        # New connections hashed to the stopped shard wait in its slot's accept queue; the
        # launcher kept that socket, so the replacement serves them instead of a reset.
        answers = in_parallel([lambda: get(server, "/who", timeout=30) for _ in range(24)])
        assert [status for status, _ in answers] == [200] * 24
        log_lines(server, "has not answered a health check for")
        log_lines(server, r"Shard \d replaced \(healthcheck\)")
        assert "after failing its health check" in server.log
        assert victim not in child_pids(server)
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


@pytest.mark.parametrize("mode", ["thread"])
def test_a_blocked_thread_shard_is_abandoned_and_replaced(mode: str) -> None:
    with serve_shards(mode, "--timeout-worker-healthcheck", "1") as server:
        with ThreadPoolExecutor(1) as pool:
            blocked = pool.submit(get, server, "/block?s=6", 30)
            log_lines(server, "abandoning its thread")
            log_lines(server, r"Shard \d replaced \(healthcheck\)")
            answers = in_parallel([lambda: get(server, "/who", timeout=30) for _ in range(24)])
            assert [status for status, _ in answers] == [200] * 24
            # Whatever becomes of the blocked request (its shard is told to stop at once when
            # its loop runs again), it ends.
            with contextlib.suppress(OSError):
                blocked.result(timeout=30)
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


def test_max_requests_recycles_shards_without_failing_a_request(mode: str) -> None:
    args = ("--limit-max-requests", "150", "--limit-max-requests-jitter", "50")
    with serve_shards(mode, *args) as server:
        with Load(server.host, server.port, keepalive=3, fresh=3) as load:
            log_lines(server, r"Shard \d replaced \(max_requests\)", count=3, timeout=60)
            load.wait_requests(100)
        result = load.result
        assert result.failed == 0, result.errors
        assert result.retried == 0
        assert len(result.shards) >= 5
        assert "reached --limit-max-requests: replacing it" in server.log
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


def test_lifespan_startup_failure_stops_the_server_with_3(mode: str) -> None:
    env = {"SHARDAPP_LIFESPAN_FAIL": "1"}
    with serve_shards(mode, env=env, ready=False) as server:
        assert server.wait(60) == 3
    assert "Application startup failed" in server.log
    assert "running on" not in server.log
    assert "replaced" not in server.log  # no restart loop


def test_an_app_that_does_not_import_stops_the_server_with_1(mode: str) -> None:
    args = shard_args(mode)
    args[0] = "no_such_module_here:app"
    with serve_process(args, ready=False) as server:
        assert server.wait(60) == 1
    assert 'could not import module "no_such_module_here"' in server.log
    assert "Traceback" not in server.log


@pytest.mark.parametrize("mode", ["process"])
def test_a_crash_looping_shard_is_restarted_with_backoff(mode: str, tmp_path: Path) -> None:
    crash_file = os.path.join(str(tmp_path), "crash")
    with serve_shards(mode, env={"SHARDAPP_CRASH_FILE": crash_file}) as server:
        victim = int(who(server)["pid"])
        open(crash_file, "w").close()  # from now on, a new shard dies while importing the app
        os.kill(victim, signal.SIGKILL)
        log_lines(server, r"failed 3 times in a row: next start in 1\.0s", timeout=30)
        os.unlink(crash_file)
        log_lines(server, r"Shard \d replaced \(crash\)", timeout=30)
        assert "failed 2 times in a row: next start in 0.5s" in server.log
        assert "exited with code 9 while starting" in server.log
        assert len(spread(server, 60)) == 2
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


def test_sigttin_adds_a_shard_and_sigttou_removes_one(mode: str) -> None:
    with serve_shards(mode) as server:
        server.send_signal(signal.SIGTTIN)
        log_lines(server, "Shard 2 started")
        assert len(spread(server, 300)) == 3
        server.send_signal(signal.SIGTTOU)
        log_lines(server, "Shard 2 removed: 2 shards")
        assert len(spread(server, 100)) == 2
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


def test_a_unix_socket_is_shared_by_every_shard(mode: str, tmp_path: Path) -> None:
    path = os.path.join(str(tmp_path), "s.sock")
    command = ["shardapp:app", "--uds", path, "--app-dir", HERE, "--shards", "2"]
    command += ["--shard-mode", mode]
    with serve_process(command) as server:
        assert "share one listening socket (a UNIX socket path" in server.log
        assert "tcp_migrate_req" not in server.log
        for _ in range(20):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(path)
                sock.sendall(b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            assert data.startswith(b"HTTP/1.1 200 ")
            assert json.loads(data.split(b"\r\n\r\n", 1)[1])["token"]
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    assert not os.path.exists(path)


def test_a_port_in_use_is_one_line_and_exit_1(mode: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = shard_args(mode)
        args[args.index("--port") + 1] = str(port)
        with serve_process(args, ready=False) as server:
            assert server.wait(30) == 1
    assert server.log.count("address already in use") == 1
    assert "Traceback" not in server.log


def test_the_host_tcp_migrate_req_setting_is_reported() -> None:
    with open("/proc/sys/net/ipv4/tcp_migrate_req") as fh:
        value = fh.read().strip()
    with serve_shards("process") as server:
        warned = "net.ipv4.tcp_migrate_req is 0" in server.log
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    assert warned == (value == "0")


def test_one_shard_still_runs_inline() -> None:
    with serve_shards("process", shards=1) as server:
        assert "(1 shard, " in log_lines(server, "running on")[0]
        assert int(who(server)["pid"]) == server.proc.pid
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


def test_thread_shards_serve_on_threads_of_one_process() -> None:
    with serve_shards("thread") as server:
        answers = [who(server) for _ in range(100)]
        assert {answer["pid"] for answer in answers} == {server.proc.pid}
        threads = {answer["thread"] for answer in answers}
        assert len(threads) == 2 and threading.get_ident() not in threads
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
