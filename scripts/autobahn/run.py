#!/usr/bin/env python3
"""Run the Autobahn testsuite's fuzzingclient against a WebSocket echo server.

The runner starts the server under test (shardcorn serving ``scripts.autobahn.echo:app``
unless ``--server-cmd`` says otherwise), waits until a real WebSocket echo round trip
succeeds, writes a fuzzingclient spec, runs ``wstest -m fuzzingclient`` under a hard
timeout, always stops the server, and summarises ``reports/index.json``.

``wstest`` is Python 2 software; ``scripts/autobahn/setup.sh`` builds its virtualenv.
See ``scripts/autobahn/README.md`` for the exit codes and how to read the summary.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_SERVER_CMD = (
    "{python} -m shardcorn scripts.autobahn.echo:app --host {host} --port {port}"
    " --log-level warning --no-access-log"
)
# 1-7 and 10 run without compression; 12 and 13 are the permessage-deflate groups, in
# which the Autobahn client itself offers the extension (the server has to accept it).
# 9.* (limits/performance: up to 16 MiB messages) is deliberately not in the default set.
DEFAULT_CASES = ("1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*", "12.*", "13.*")
BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")

EXIT_OK = 0
EXIT_FAILED = 1  # a case FAILED (see --fail-on), the server died or never became ready
EXIT_ERROR = 2  # the run itself broke: wstest timed out or crashed, bad arguments, no report
EXIT_NO_WSTEST = 3  # wstest is not installed: callers may skip (as setup.sh's exit 3)

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROBE_TEXT = b"shardcorn-autobahn-probe"

RUNNING_RE = re.compile(r"Running test case ID (\S+) for agent")
TOTAL_RE = re.compile(r"will run (\d+) test cases")


class RunnerError(Exception):
    """The run cannot go on; ``code`` is the process exit status to use."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def log(message: str) -> None:
    print(f"[autobahn] {message}", flush=True)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def autobahn_home() -> Path:
    env = os.environ.get("AUTOBAHN_HOME")
    return Path(env) if env else Path.home() / ".cache" / "shardcorn-autobahn"


def find_wstest(explicit: str | None) -> str:
    """Locate ``wstest``: --wstest, $WSTEST, $AUTOBAHN_HOME/venv/bin/wstest, then PATH."""
    candidates: list[str] = []
    if explicit:
        candidates.append(explicit)
    elif os.environ.get("WSTEST"):
        candidates.append(os.environ["WSTEST"])
    else:
        candidates.append(str(autobahn_home() / "venv" / "bin" / "wstest"))
        found = shutil.which("wstest")
        if found:
            candidates.append(found)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise RunnerError(
        f"wstest not found (looked at: {', '.join(candidates)}); "
        "run scripts/autobahn/setup.sh first",
        EXIT_NO_WSTEST,
    )


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def split_patterns(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def case_key(case_id: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in case_id.split("."))
    except ValueError:
        return (sys.maxsize,)


def agent_from_argv(argv: list[str]) -> str:
    name = Path(argv[0]).name if argv else "server"
    if "-m" in argv[:-1]:
        name = argv[argv.index("-m") + 1].split(".")[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "server"


def server_argv(template: str, host: str, port: int) -> list[str]:
    """Expand ``{python}``, ``{host}`` and ``{port}`` (other braces are left alone)."""
    argv = shlex.split(template)
    expanded = [
        arg.replace("{python}", sys.executable).replace("{host}", host).replace("{port}", str(port))
        for arg in argv
    ]
    if not expanded:
        raise RunnerError("--server-cmd is empty", EXIT_ERROR)
    if "{port}" not in template:
        log("warning: --server-cmd has no {port} placeholder; the server must listen on --port")
    return expanded


# --------------------------------------------------------------------------- processes


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM ``proc`` itself, wait ``grace`` seconds, then SIGKILL its process group.

    The process was started with ``start_new_session=True``, so its group id is its pid
    and the group holds only what it spawned (worker processes, shards).
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


class Server:
    """The server under test, with its output in ``server.log``."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log: TextIO | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = self.log_path.open("w", encoding="utf-8")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise RunnerError(f"cannot start the server {self.argv!r}: {exc}", EXIT_FAILED) from exc

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> int | None:
        if self.proc is not None:
            stop_group(self.proc, grace=10.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if self.proc is None else self.proc.returncode


# --------------------------------------------------------------------------- readiness


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        data += chunk
    return data


def _client_frame(opcode: int, payload: bytes) -> bytes:
    if len(payload) > 125:
        raise ValueError("probe payloads are short")
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    first, second = _recv_exact(sock, 2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(_recv_exact(sock, 2), "big")
    elif length == 127:
        length = int.from_bytes(_recv_exact(sock, 8), "big")
    if second & 0x80:
        raise ConnectionError("the server sent a masked frame")
    return first & 0x0F, _recv_exact(sock, length)


def probe_echo(host: str, port: int, timeout: float) -> None:
    """One WebSocket handshake plus a text echo round trip and a clean close."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest())
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode("ascii")
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"connection closed during the handshake: {head[:200]!r}")
            head += chunk
            if len(head) > 65536:
                raise ConnectionError("handshake response too large")
        head, _, rest = head.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status_line + b" ":
            raise ConnectionError(f"handshake answered {status_line.decode('latin-1')!r}")
        if accept.lower() not in head.lower():
            raise ConnectionError("handshake has a wrong Sec-WebSocket-Accept")
        if rest:
            raise ConnectionError("unexpected bytes after the handshake response")
        sock.sendall(_client_frame(0x1, PROBE_TEXT))
        opcode, payload = _read_frame(sock)
        if (opcode, payload) != (0x1, PROBE_TEXT):
            raise ConnectionError(f"echo probe got opcode {opcode} payload {payload[:60]!r}")
        sock.sendall(_client_frame(0x8, (1000).to_bytes(2, "big")))
        with contextlib.suppress(OSError):
            _read_frame(sock)  # the server's close frame; best effort


def wait_ready(server: Server, host: str, port: int, timeout: float) -> float:
    """Probe until the echo works; return the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    last_error = "no attempt"
    while True:
        code = server.returncode()
        if code is not None:
            raise RunnerError(
                f"the server exited with status {code} before becoming ready; "
                f"last lines of {server.log_path}:\n{tail(server.log_path)}",
                EXIT_FAILED,
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RunnerError(
                f"the server was not ready after {timeout:g}s (last probe error: {last_error}); "
                f"last lines of {server.log_path}:\n{tail(server.log_path)}",
                EXIT_FAILED,
            )
        try:
            probe_echo(host, port, timeout=max(0.5, min(5.0, remaining)))
        except ConnectionRefusedError as exc:
            last_error = str(exc)
            time.sleep(0.1)
        except (OSError, ValueError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        else:
            return time.monotonic() - start


# --------------------------------------------------------------------------- wstest


def write_spec(workdir: Path, agent: str, url: str, cases: list[str], exclude: list[str]) -> Path:
    spec = {
        "outdir": str(workdir / "reports"),
        "servers": [{"agent": agent, "url": url, "options": {"version": 18}}],
        "cases": cases,
        "exclude-cases": exclude,
        "exclude-agent-cases": {},
    }
    path = workdir / "spec.json"
    path.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return path


@dataclass
class WstestRun:
    returncode: int | None = None
    timed_out: bool = False
    server_died: int | None = None  # the server's exit status if it died during the run
    total: int | None = None
    started: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def current(self) -> str | None:
        return self.started[-1] if self.started else None


def _pump(stream: Any, log_file: TextIO, state: WstestRun, echo: bool) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        log_file.write(line)
        log_file.flush()
        if echo:
            sys.stdout.write(line)
            sys.stdout.flush()
        match = RUNNING_RE.search(line)
        if match:
            state.started.append(match.group(1))
            continue
        match = TOTAL_RE.search(line)
        if match:
            state.total = int(match.group(1))


def run_wstest(
    wstest: str, spec: Path, workdir: Path, *, timeout: float, server: Server, verbose: bool
) -> WstestRun:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONUNBUFFERED"] = "1"
    state = WstestRun()
    log_path = workdir / "wstest.log"
    start = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(
            [wstest, "-m", "fuzzingclient", "-s", str(spec)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pump = threading.Thread(
            target=_pump, args=(proc.stdout, log_file, state, verbose), daemon=True
        )
        pump.start()
        last_group = ""
        next_heartbeat = start + 60.0
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if now - start > timeout:
                    state.timed_out = True
                    break
                code = server.returncode()
                if code is not None:
                    state.server_died = code
                    break
                if state.total == 0:
                    break  # wstest idles forever when the patterns match no case
                current = state.current
                group = current.split(".")[0] if current else ""
                if not verbose and (group != last_group or now >= next_heartbeat):
                    if current:
                        log(
                            f"  case {current} ({len(state.started)}/{state.total or '?'}, "
                            f"{now - start:.0f}s)"
                        )
                    last_group = group
                    next_heartbeat = now + 60.0
                time.sleep(0.2)
            if state.server_died is None and not state.timed_out and state.total != 0:
                # wstest ends by itself when it cannot connect: look at the server again.
                state.server_died = server.returncode()
        finally:
            stop_group(proc, grace=3.0)
            pump.join(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
    state.returncode = proc.returncode
    state.seconds = time.monotonic() - start
    return state


# --------------------------------------------------------------------------- summary


@dataclass
class CaseResult:
    case_id: str
    behavior: str
    behavior_close: str
    remote_close_code: int | None
    duration_ms: int | None
    description: str = ""
    expectation: str = ""
    result: str = ""
    result_close: str = ""


@dataclass
class AgentSummary:
    agent: str
    cases: list[CaseResult]

    def counts(self) -> Counter[str]:
        return Counter(case.behavior for case in self.cases)

    def close_counts(self) -> Counter[str]:
        return Counter(case.behavior_close for case in self.cases)

    def with_behavior(self, behaviors: set[str]) -> list[CaseResult]:
        return [case for case in self.cases if case.behavior in behaviors]


def _clean(text: object) -> str:
    """Case descriptions carry HTML markup; keep plain, single-line text."""
    plain = re.sub(r"<[^>]+>", " ", str(text or ""))
    return " ".join(plain.split())


def load_summary(index_path: Path) -> list[AgentSummary]:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunnerError(f"cannot read {index_path}: {exc}", EXIT_ERROR) from exc
    if not isinstance(index, dict):
        raise RunnerError(f"{index_path} is not an Autobahn index", EXIT_ERROR)
    summaries = []
    for agent, entries in sorted(index.items()):
        cases = []
        for case_id, entry in sorted(entries.items(), key=lambda item: case_key(item[0])):
            cases.append(
                CaseResult(
                    case_id=case_id,
                    behavior=str(entry.get("behavior", "?")),
                    behavior_close=str(entry.get("behaviorClose", "?")),
                    remote_close_code=entry.get("remoteCloseCode"),
                    duration_ms=entry.get("duration"),
                )
            )
            report = entry.get("reportfile")
            if report and (cases[-1].behavior != "OK" or cases[-1].behavior_close != "OK"):
                _add_details(cases[-1], index_path.parent / str(report))
        summaries.append(AgentSummary(agent, cases))
    return summaries


def _add_details(case: CaseResult, report_path: Path) -> None:
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    case.description = _clean(report.get("description"))
    case.expectation = _clean(report.get("expectation"))
    case.result = _clean(report.get("result"))
    case.result_close = _clean(report.get("resultClose"))


def _group_key(item: tuple[str, int]) -> tuple[int, ...]:
    return case_key(item[0])


def print_summary(summaries: list[AgentSummary], index_path: Path, fail_on: set[str]) -> bool:
    """Print the summary; return True when no case has a behavior in ``fail_on``."""
    passed = True
    print()
    print(f"Autobahn fuzzingclient summary ({index_path})")
    for summary in summaries:
        counts = summary.counts()
        print(f"\nagent {summary.agent}: {len(summary.cases)} cases")
        for behavior in [*BEHAVIORS, *sorted(set(counts) - set(BEHAVIORS))]:
            print(f"  {behavior:<14} {counts.get(behavior, 0):>5}")
        close = summary.close_counts()
        close_text = ", ".join(f"{name} {count}" for name, count in sorted(close.items()))
        print(f"  closing behavior: {close_text}")
        groups = Counter(case.case_id.split(".")[0] for case in summary.cases)
        group_text = ", ".join(
            f"{group}.*: {count}" for group, count in sorted(groups.items(), key=_group_key)
        )
        print(f"  cases per group: {group_text}")

        deflate = [c for c in summary.cases if c.case_id.split(".")[0] in ("12", "13")]
        if deflate and all(c.behavior == "UNIMPLEMENTED" for c in deflate):
            print(
                "  note: every 12.*/13.* case is UNIMPLEMENTED: "
                "the server did not negotiate permessage-deflate"
            )

        failing = summary.with_behavior(fail_on)
        if failing:
            passed = False
            print(f"\n  {'/'.join(sorted(fail_on))} cases ({len(failing)}):")
            for case in failing:
                print(
                    f"  - {case.case_id} [{case.behavior}; close {case.behavior_close}, "
                    f"remote close code {case.remote_close_code}]"
                )
                if case.description:
                    print(f"      description: {case.description}")
                if case.expectation:
                    print(f"      expectation: {case.expectation}")
                if case.result:
                    print(f"      result: {case.result}")
                if case.result_close:
                    print(f"      closing: {case.result_close}")
        others = [
            c
            for c in summary.cases
            if c.behavior not in fail_on and (c.behavior != "OK" or c.behavior_close != "OK")
        ]
        if others:
            print(f"\n  other cases not OK (they do not fail the run) ({len(others)}):")
            for case in others:
                text = f": {case.description}" if case.description else ""
                if len(text) > 90:
                    text = text[:87] + "..."
                print(f"  - {case.case_id} [{case.behavior}; close {case.behavior_close}]{text}")
    return passed


def summary_json(summaries: list[AgentSummary], fail_on: set[str]) -> dict[str, Any]:
    return {
        summary.agent: {
            "cases": len(summary.cases),
            "behavior": {b: summary.counts().get(b, 0) for b in BEHAVIORS},
            "behaviorClose": dict(summary.close_counts()),
            "failing": [
                {
                    "case": case.case_id,
                    "behavior": case.behavior,
                    "behaviorClose": case.behavior_close,
                    "remoteCloseCode": case.remote_close_code,
                    "description": case.description,
                    "result": case.result,
                    "resultClose": case.result_close,
                }
                for case in summary.with_behavior(fail_on)
            ],
        }
        for summary in summaries
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server-cmd",
        default=DEFAULT_SERVER_CMD,
        help="command starting the server under test; {port}, {host} and {python} "
        "(this interpreter) are filled in; run from the repository root "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to test (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    parser.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help="comma-separated Autobahn case patterns, e.g. '1.*,2.*' or '5.1,12.1.*' "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--exclude-cases", default="", help="comma-separated case patterns to leave out"
    )
    parser.add_argument("--agent", help="agent name in the reports (default: from the command)")
    parser.add_argument(
        "--report-dir",
        type=Path,
        help="keep spec, logs and reports here (its reports/ is replaced); default: a "
        "temporary directory, removed after a passing run unless --keep",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--wstest",
        help="wstest executable (default: $WSTEST, $AUTOBAHN_HOME/venv/bin/wstest, then PATH)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="hard limit for wstest, seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the server's first echo (default: %(default)s)",
    )
    parser.add_argument(
        "--fail-on",
        default="FAILED",
        help="comma-separated behaviors that fail the run, e.g. FAILED,UNIMPLEMENTED to "
        "also require permessage-deflate (default: %(default)s)",
    )
    parser.add_argument("--summary-json", type=Path, help="also write the summary as JSON")
    parser.add_argument(
        "--summarize-only",
        type=Path,
        metavar="INDEX_OR_DIR",
        help="summarise an existing reports/index.json (or a directory holding it); run nothing",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show wstest's output")
    args = parser.parse_args(argv)
    if not split_patterns(args.cases):
        parser.error("--cases is empty")
    if args.timeout <= 0 or args.startup_timeout <= 0:
        parser.error("timeouts must be positive")
    return args


def summarize(index_path: Path, fail_on: set[str], json_path: Path | None) -> bool:
    summaries = load_summary(index_path)
    if not summaries:
        raise RunnerError(f"{index_path} holds no agent", EXIT_ERROR)
    passed = print_summary(summaries, index_path, fail_on)
    if json_path is not None:
        write_summary_json(json_path, summaries, fail_on)
    total = sum(len(s.cases) for s in summaries)
    failing = sum(len(s.with_behavior(fail_on)) for s in summaries)
    print(f"autobahn: {total - failing} passed, {failing} failed")
    return passed


def write_summary_json(path: Path, summaries: list[AgentSummary], fail_on: set[str]) -> None:
    path.write_text(json.dumps(summary_json(summaries, fail_on), indent=2) + "\n", encoding="utf-8")


def resolve_index(path: Path) -> Path:
    if path.is_dir():
        for candidate in (path / "index.json", path / "reports" / "index.json"):
            if candidate.is_file():
                return candidate
    return path


def prepare_workdir(report_dir: Path | None) -> tuple[Path, bool]:
    if report_dir is None:
        return Path(tempfile.mkdtemp(prefix="shardcorn-autobahn-")), True
    report_dir = report_dir.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(report_dir / "reports", ignore_errors=True)
    return report_dir, False


def run(args: argparse.Namespace) -> int:
    fail_on = {b.upper() for b in split_patterns(args.fail_on)}
    if args.summarize_only is not None:
        index = resolve_index(args.summarize_only)
        return EXIT_OK if summarize(index, fail_on, args.summary_json) else EXIT_FAILED

    wstest = find_wstest(args.wstest)
    cases = split_patterns(args.cases)
    exclude = split_patterns(args.exclude_cases)
    port = args.port or free_port(args.host)
    argv = server_argv(args.server_cmd, args.host, port)
    agent = args.agent or agent_from_argv(argv)
    workdir, is_temp = prepare_workdir(args.report_dir)
    log(f"work directory {workdir}")
    log(f"server: {shlex.join(argv)}")
    log(f"cases: {','.join(cases)}" + (f" minus {','.join(exclude)}" if exclude else ""))

    server = Server(argv, workdir / "server.log")
    outcome: WstestRun | None = None
    started = time.monotonic()
    try:
        server.start()
        ready = wait_ready(server, args.host, port, args.startup_timeout)
        log(f"server ready after {ready:.1f}s (echo probe passed); running wstest")
        spec = write_spec(workdir, agent, f"ws://{args.host}:{port}", cases, exclude)
        outcome = run_wstest(
            wstest, spec, workdir, timeout=args.timeout, server=server, verbose=args.verbose
        )
    finally:
        code = server.stop()
        if outcome is not None:
            log(
                f"server stopped (status {code}); wstest took {outcome.seconds:.0f}s, "
                f"whole run {time.monotonic() - started:.0f}s"
            )

    status = EXIT_OK
    if outcome.server_died is not None:
        log(
            f"FAIL: the server died (status {outcome.server_died}) during case "
            f"{outcome.current}; last lines of server.log:\n{tail(workdir / 'server.log')}"
        )
        status = EXIT_FAILED
    elif outcome.timed_out:
        log(
            f"ERROR: wstest did not finish within {args.timeout:g}s (at case {outcome.current}, "
            f"{len(outcome.started)}/{outcome.total or '?'})"
        )
        status = EXIT_ERROR
    elif outcome.total == 0:
        log("ERROR: the case patterns matched no Autobahn case")
        status = EXIT_ERROR

    index = workdir / "reports" / "index.json"
    ran = failing = missing = 0
    if index.is_file():
        summaries = load_summary(index)
        if not print_summary(summaries, index, fail_on) and status == EXIT_OK:
            status = EXIT_FAILED
        ran = sum(len(s.cases) for s in summaries)
        failing = sum(len(s.with_behavior(fail_on)) for s in summaries)
        if outcome.total is not None and ran < outcome.total:
            log(f"FAIL: only {ran} of {outcome.total} cases have a result")
            missing = outcome.total - ran
            if status == EXIT_OK:
                status = EXIT_FAILED
        if args.summary_json is not None:
            write_summary_json(args.summary_json, summaries, fail_on)
    else:
        log(
            f"ERROR: wstest wrote no {index} (exit status {outcome.returncode}); "
            f"last lines of wstest.log:\n{tail(workdir / 'wstest.log')}"
        )
        if status == EXIT_OK:
            status = EXIT_ERROR

    verdict = {EXIT_OK: "PASS", EXIT_FAILED: "FAIL", EXIT_ERROR: "ERROR"}[status]
    print(
        f"\n[autobahn] verdict {verdict}: {ran} cases with a result, wstest {outcome.seconds:.0f}s"
    )
    # A plain closing count for CI logs: cases that did not fail, and failing or missing ones.
    failed = failing + missing
    if status != EXIT_OK and failed == 0:
        failed = 1  # the run itself failed: never report "0 failed" then
    print(f"autobahn: {ran - failing} passed, {failed} failed")
    if is_temp and status == EXIT_OK and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"kept {workdir} (spec.json, server.log, wstest.log, reports/index.html)")
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except RunnerError as exc:
        label = {EXIT_NO_WSTEST: "SKIP", EXIT_FAILED: "FAIL"}.get(exc.code, "ERROR")
        log(f"{label}: {exc}")
        return exc.code
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
