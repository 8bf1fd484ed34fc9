"""shardcorn.workers.ShardcornWorker under real gunicorn: boot, serve from every worker, keep the
heartbeat, recycle after --max-requests, stop cleanly on SIGTERM, halt on a failed startup."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from functools import cache
from pathlib import Path

import httpx
import pytest

from shardcorn.testing import ProcessServer
from tests.parity.conftest import TLSFiles
from tests.parity.helpers import spawn as spawn_process
from tests.parity.helpers import write_module

TIMEOUT = 30.0
WORKER = "shardcorn.workers.ShardcornWorker"

APP = """
import asyncio
import os
import time


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.environ.get("FAIL_STARTUP"):
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/slow":
        await asyncio.sleep(float(scope["query_string"] or b"1"))
    if scope["path"] == "/block":
        time.sleep(30)  # blocks the loop: the heartbeat stops
    body = f"{os.getpid()} {scope['scheme']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi " + environ["PATH_INFO"].encode()]
"""


@cache
def gunicorn_flags() -> tuple[str, ...]:
    """gunicorn 25+ opens a control socket in ~/.gunicorn; tests running side by side would
    share it, so it is switched off where the option exists."""
    help_text = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--help"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    ).stdout
    return ("--no-control-socket",) if "--no-control-socket" in help_text else ()


def gunicorn(
    app_dir: Path, target: str, *extra: str, env: dict[str, str] | None = None
) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", target, "-k", WORKER, "-b", "127.0.0.1:0",
        "--chdir", str(app_dir), *gunicorn_flags(), *extra,
    ]  # fmt: skip


def wait_listening(server: ProcessServer) -> str:
    line = server.read_until(r"Listening at: ", TIMEOUT)
    match = re.search(r"Listening at: (https?://127\.0\.0\.1:\d+)", line)
    assert match is not None, line
    return match.group(1)


def wait_workers(server: ProcessServer, count: int) -> None:
    for _ in range(count):
        server.read_until("Application startup complete", TIMEOUT)
        # Each line is consumed once: drop it so the next wait finds the next worker's.
        server.output[:] = [
            line for line in server.output if "Application startup complete" not in line
        ]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    write_module(tmp_path, "gapp", APP)
    return tmp_path


def test_two_workers_serve_and_stop_on_sigterm(app_dir: Path) -> None:
    with spawn_process(gunicorn(app_dir, "gapp:app", "-w", "2")) as server:
        url = wait_listening(server)
        wait_workers(server, 2)
        pids = set()
        # A new connection per request: the kernel spreads them over both workers' accepts.
        for _ in range(40):
            response = httpx.get(url + "/", headers={"connection": "close"}, timeout=TIMEOUT)
            assert response.status_code == 200
            pids.add(response.text.split()[0])
            if len(pids) == 2:
                break
        assert len(pids) == 2
        server.send_signal(signal.SIGTERM)
        assert server.wait(TIMEOUT) == 0
    assert server.log.count("Application shutdown complete") == 2
    assert "Shutting down: Master" in server.log


def test_heartbeat_keeps_a_busy_worker_alive(app_dir: Path) -> None:
    # --timeout 1: a worker silent for a second is killed. The request takes longer, on an
    # idle loop: only the heartbeat timer keeps the arbiter content.
    with spawn_process(gunicorn(app_dir, "gapp:app", "--timeout", "1")) as server:
        url = wait_listening(server)
        wait_workers(server, 1)
        response = httpx.get(url + "/slow?2.5", timeout=TIMEOUT)
        assert response.status_code == 200
    assert "WORKER TIMEOUT" not in server.log


def test_stuck_worker_is_aborted_and_replaced(app_dir: Path) -> None:
    with spawn_process(gunicorn(app_dir, "gapp:app", "--timeout", "1")) as server:
        url = wait_listening(server)
        wait_workers(server, 1)
        with pytest.raises(httpx.HTTPError):
            httpx.get(url + "/block", timeout=TIMEOUT)
        server.read_until("WORKER TIMEOUT", TIMEOUT)
        # ABRT reached our handler (exit code 1), not the arbiter's later SIGKILL.
        server.read_until(r"exited with code 1", TIMEOUT)
        wait_workers(server, 1)
        assert httpx.get(url + "/", timeout=TIMEOUT).status_code == 200
    assert "SIGKILL" not in server.log


def test_max_requests_recycles_the_worker(app_dir: Path) -> None:
    with spawn_process(gunicorn(app_dir, "gapp:app", "--max-requests", "2")) as server:
        url = wait_listening(server)
        wait_workers(server, 1)
        with httpx.Client(timeout=TIMEOUT) as client:
            first = {client.get(url + "/", headers={"connection": "close"}).text for _ in "ab"}
            # The worker stops after its second request; the arbiter boots a new one.
            wait_workers(server, 1)
            second = client.get(url + "/").text
    assert len(first) == 1
    assert second.split()[0] != next(iter(first)).split()[0]


def test_wsgi_app_through_the_worker(app_dir: Path) -> None:
    with spawn_process(gunicorn(app_dir, "gapp:wsgi")) as server:
        url = wait_listening(server)
        response = httpx.get(url + "/hello", timeout=TIMEOUT)
    assert response.text == "wsgi /hello"


def test_tls_through_the_worker(app_dir: Path, tls: TLSFiles) -> None:
    args = gunicorn(app_dir, "gapp:app", "--certfile", str(tls.cert), "--keyfile", str(tls.key))
    with spawn_process(args) as server:
        url = wait_listening(server)
        wait_workers(server, 1)
        with httpx.Client(verify=tls.client_context(), timeout=TIMEOUT) as client:
            response = client.get(url.replace("http://", "https://") + "/")
    assert response.text.endswith(" https")


def test_failed_startup_halts_gunicorn(app_dir: Path) -> None:
    with spawn_process(gunicorn(app_dir, "gapp:app"), env={"FAIL_STARTUP": "1"}) as server:
        wait_listening(server)
        # The worker exits with gunicorn's boot-error code; the arbiter stops instead of
        # booting failing workers forever.
        assert server.wait(TIMEOUT) == 3
    assert "no database" in server.log
    assert "Worker failed to boot" in server.log


def test_bad_tls_file_halts_gunicorn(app_dir: Path, tls: TLSFiles) -> None:
    args = gunicorn(app_dir, "gapp:app", "--certfile", str(tls.garbage), "--keyfile", str(tls.key))
    with spawn_process(args) as server:
        assert server.wait(TIMEOUT) == 3
    assert f"--ssl-certfile: no PEM certificate in {tls.garbage}" in server.log
