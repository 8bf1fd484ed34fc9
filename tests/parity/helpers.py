"""Helpers of the uvicorn-parity suite: certificate files, app modules, processes.

Everything runs for real: servers on 127.0.0.1 with ephemeral ports (or a UNIX socket in a
temporary directory), real clients, trustme certificates written to disk.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

from shardcorn.testing import READY_LINE, ProcessServer, shardcorn_command, stop_process

KEY_PASSWORD = "correct horse"


@dataclass(frozen=True)
class TLSFiles:
    ca: trustme.CA
    ca_file: Path
    cert: Path  # the server's certificate chain
    key: Path
    encrypted_key: Path  # ``key`` encrypted with KEY_PASSWORD
    other_key: Path  # a key that does not belong to ``cert``
    client_cert: Path  # a client certificate and its key, signed by ``ca``
    rogue_client_cert: Path  # a client certificate signed by another CA
    garbage: Path

    def client_context(self, with_certificate: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if with_certificate:
            context.load_cert_chain(str(self.client_cert))
        return context


# -- apps ----------------------------------------------------------------------------------
SCOPE_APP = """
import json
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    report = {
        "client": scope["client"],
        "server": scope["server"],
        "scheme": scope["scheme"],
        "root_path": scope["root_path"],
        "path": scope["path"],
        "greeting": os.environ.get("GREETING"),
        "version": VERSION,
    }
    body = json.dumps(report).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


VERSION = "v1"
"""


async def scope_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The in-process twin of SCOPE_APP: answers with what the scope says (also over a
    WebSocket: one text message, then close)."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(_report(scope))})
        await send({"type": "websocket.close", "code": 1000})
        return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps(_report(scope)).encode()})


def _report(scope: dict[str, Any]) -> dict[str, Any]:
    keys = ("client", "server", "scheme", "root_path", "path")
    return {key: scope[key] for key in keys}


def write_module(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


# -- processes -----------------------------------------------------------------------------
@contextmanager
def spawn(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    cwd: str | Path | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Iterator[ProcessServer]:
    """Run a command with its stderr readable through ProcessServer; always stop it."""
    proc = subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        cwd=cwd,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
    )
    server = ProcessServer(proc)
    try:
        yield server
    finally:
        stop_process(proc, stop_signal)


def wait_ready(server: ProcessServer, timeout: float = 20.0) -> ProcessServer:
    """Wait for shardcorn's "running on" line and take scheme, host and port from it."""
    line = server.read_until(r"running on ", timeout)
    match = READY_LINE.search(line)
    if match is not None:
        server.scheme = match.group(1)
        server.host = match.group(2).strip("[]")
        server.port = int(match.group(3))
    return server


def run_shardcorn(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m shardcorn`` expecting it to exit by itself; capture its output."""
    return subprocess.run(
        shardcorn_command(args),
        pass_fds=tuple(pass_fds),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        timeout=timeout,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


PYTHON = sys.executable
