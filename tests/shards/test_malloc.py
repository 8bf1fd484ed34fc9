"""--tune-malloc: a serving process reuses freed heap instead of faulting in fresh pages.

Measured the way it matters: minor page faults (ru_minflt) while the process allocates and
frees large blocks, as a server does with large bodies, with and without the tuning.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shardcorn.shards.malloc import operator_chose
from shardcorn.testing import serve_process

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's mallopt is Linux/glibc only",
)

# Eight 1 MiB blocks filled (so their pages are touched), then freed, twenty times over.
CHURN = """
import resource

def churn():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        blocks = [b"\\x01" * (1024 * 1024) for _ in range(8)]
        del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
"""

APP = (
    CHURN
    + """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    churn()  # the first round grows the heap; count the faults of the second
    faults = churn()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(faults).encode()})
"""
)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    return env


def _faults_in_script(tune: bool, env: dict[str, str]) -> tuple[bool, int]:
    script = (
        CHURN
        + "from shardcorn.shards.malloc import tune_malloc\n"
        + f"tuned = tune_malloc() if {tune} else False\n"
        + "churn()\nprint(tuned, churn())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    tuned, faults = done.stdout.split()
    return tuned == "True", int(faults)


def test_tuned_process_reuses_freed_blocks() -> None:
    tuned, faults = _faults_in_script(True, _clean_env())
    assert tuned
    assert faults < 500  # 160 MiB allocated and freed: 40,000 pages if each were faulted in


def test_untuned_process_faults_its_pages_in_again() -> None:
    """The baseline the tuning is for: glibc's defaults give the memory back each time."""
    tuned, faults = _faults_in_script(False, _clean_env())
    assert not tuned
    assert faults > 20_000


def test_the_operators_own_malloc_settings_win() -> None:
    env = {**_clean_env(), "MALLOC_TRIM_THRESHOLD_": "131072"}
    tuned, faults = _faults_in_script(True, env)
    assert not tuned
    assert faults > 20_000  # glibc used the operator's threshold, not ours


@pytest.mark.parametrize(
    ("name", "value", "chose"),
    [
        ("MALLOC_MMAP_THRESHOLD_", "1", True),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1", True),
        ("GLIBC_TUNABLES", "glibc.pthread.rseq=0", False),
    ],
)
def test_what_counts_as_the_operators_choice(
    name: str, value: str, chose: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("MALLOC_") or key == "GLIBC_TUNABLES":
            monkeypatch.delenv(key)
    monkeypatch.setenv(name, value)
    assert operator_chose() is chose


@pytest.mark.parametrize(("flag", "tuned"), [(None, True), ("--no-tune-malloc", False)])
def test_the_server_process_is_tuned_unless_told_not_to(
    flag: str | None, tuned: bool, tmp_path: Path
) -> None:
    (tmp_path / "churnapp.py").write_text(APP)
    args = ["churnapp:app", "--port", "0", "--app-dir", str(tmp_path), "--lifespan", "off"]
    if flag:
        args.append(flag)
    with serve_process(args, env=_clean_env()) as server:
        response = httpx.get(server.url + "/", timeout=30)
    faults = int(response.text)
    assert (faults < 500) is tuned, faults
