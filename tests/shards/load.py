"""A bounded HTTP load for the shard tests: keep-alive and fresh-connection clients in threads.

Each client thread sends ``GET path`` in a loop until stopped and records which shard answered
(the ``token`` of ``shardapp``'s ``/who``, unique per shard loop). Failures are counted by kind.

A keep-alive client behaves like any correct HTTP/1.1 client (RFC 9112 section 9.3.1, and what
urllib3, browsers and wrk do): when a *reused* connection turns out to have been closed before
any byte of the response came back, it reconnects and sends the (idempotent) request again.
Those are counted apart as ``retried``; everything else that goes wrong is a failure: refused
or reset fresh connections, a reset mid-response, a timeout, a status other than 200.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

# Errors that mean "the server closed this connection before answering".
_CLOSED_BEFORE_ANSWER = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    retried: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    shards: Counter[str] = field(default_factory=Counter)  # answers per shard token

    def merge(self, other: LoadResult) -> None:
        self.ok += other.ok
        self.failed += other.failed
        self.retried += other.retried
        self.errors.update(other.errors)
        self.shards.update(other.shards)


class Load:
    """``with Load(host, port) as load: ...``; ``load.result`` once the block has ended."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        keepalive: int = 4,
        fresh: int = 4,
        path: str = "/who",
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.path, self.timeout = host, port, path, timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._results: list[LoadResult] = []
        self._done = 0
        self._threads = [
            threading.Thread(target=self._keepalive_client, name=f"load-ka-{i}", daemon=True)
            for i in range(keepalive)
        ] + [
            threading.Thread(target=self._fresh_client, name=f"load-fresh-{i}", daemon=True)
            for i in range(fresh)
        ]
        self.result = LoadResult()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise TimeoutError(f"load clients did not stop: {alive}")
        total = LoadResult()
        for result in self._results:
            total.merge(result)
        self.result = total
        return total

    def wait_requests(self, count: int, timeout: float = 20.0) -> None:
        """Block until ``count`` more requests have been answered (load is flowing)."""
        deadline = time.monotonic() + timeout
        with self._progress:
            target = self._done + count
            while self._done < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the load did not reach {count} requests in {timeout}s")
                self._progress.wait(remaining)

    # -- clients ---------------------------------------------------------------------------
    def _answered(self, result: LoadResult, body: bytes) -> None:
        result.ok += 1
        result.shards[json.loads(body)["token"]] += 1
        with self._progress:
            self._done += 1
            self._progress.notify_all()

    def _failed(self, result: LoadResult, exc: BaseException | str) -> None:
        result.failed += 1
        result.errors[exc if isinstance(exc, str) else type(exc).__name__] += 1

    def _keepalive_client(self) -> None:
        result = LoadResult()
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
            except _CLOSED_BEFORE_ANSWER as exc:
                conn.close()
                conn = None
                if reused:
                    result.retried += 1
                else:
                    self._failed(result, exc)
                continue
            except OSError as exc:
                conn.close()
                conn = None
                self._failed(result, exc)
                continue
            try:
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                self._failed(result, exc)
                continue
            if response.status != 200:
                self._failed(result, f"status {response.status}")
            else:
                self._answered(result, body)
            if response.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with self._lock:
            self._results.append(result)

    def _fresh_client(self) -> None:
        result = LoadResult()
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                conn.request("GET", self.path, headers={"Connection": "close"})
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._failed(result, exc)
                continue
            finally:
                conn.close()
            if response.status != 200:
                self._failed(result, f"status {response.status}")
            else:
                self._answered(result, body)
        with self._lock:
            self._results.append(result)
