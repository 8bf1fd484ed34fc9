"""Smoke test: the runner, for real, against a real server, with real Locust, for a few seconds.

It runs by default (CI included); ``-m loadtest`` selects it and ``-m 'not loadtest'`` skips
it. The runner is bounded on its own; the timeouts here are the last line of defence, and on
one the runner gets SIGTERM first, so that it stops Locust and the server before it goes.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from loadtests.process import REPO_ROOT

# Ready (<= 20 s) + quiet twice (<= 5 s each) + Locust (3 s run + 5 s stop + start-up) and the
# server's stop, with room for a slow CI machine.
RUNNER_TIMEOUT = 120

pytestmark = [pytest.mark.loadtest, pytest.mark.timeout(RUNNER_TIMEOUT + 30)]


def run_runner(*args: str) -> tuple[int, str, str]:
    argv = [
        sys.executable,
        "-m",
        "loadtests.run",
        "--shards",
        "2",
        "--users",
        "4",
        "--spawn-rate",
        "4",
        "--run-time",
        "3s",
        "--stop-timeout",
        "5",
        "--ready-timeout",
        "20",
        "--quiet-timeout",
        "5",
        *args,
    ]
    with subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=RUNNER_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                stdout, stderr = process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            pytest.fail(f"the runner did not finish in {RUNNER_TIMEOUT}s\n{stdout}\n{stderr}")
    return process.returncode, stdout, stderr


def test_hello_cross_check() -> None:
    code, out, err = run_runner("--scenario", "hello")
    report = f"{out}\n{err}"
    assert code == 0, report
    assert "cross-check http: OK" in out, report
    assert "cross-check rejections: OK" in out, report
    assert out.rstrip().endswith("result: PASS"), report


def test_limit_rejections_match_exporter() -> None:
    # 2 shards x --limit-concurrency 2: five users or more are sure to go over the limit.
    code, out, err = run_runner("--scenario", "limit", "--users", "8")
    report = f"{out}\n{err}"
    assert code == 0, report
    assert "cross-check http: OK" in out, report
    assert "cross-check rejections: OK" in out, report
    assert "check limit reached: OK" in out, report
    assert out.rstrip().endswith("result: PASS"), report
