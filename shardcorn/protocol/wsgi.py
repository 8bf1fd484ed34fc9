"""WSGI apps (PEP 3333) served through ASGI: each request runs in a thread of a small pool.

A request's thread and its shard's loop meet in one :class:`_Exchange`:

* Request body: the app reads ``wsgi.input``; when nothing is buffered the thread asks the
  loop for more, and a pump coroutine (the only caller of ``receive()``) fetches one chunk.
  Nothing is read before the app asks, so an upload is never held in memory whole, and
  ``Expect: 100-continue`` is answered only once the app reads.
* Response: each chunk the app yields is handed to ``send()`` on the loop and the thread waits
  until ``send()`` returns. ``send()`` waits while the socket's buffer is full, so a slow
  client slows the app's iteration instead of filling memory (backpressure).
* Disconnect: once the body is read, the pump keeps waiting on ``receive()``; when the client
  goes away the next chunk the app yields raises :class:`ClientDisconnectedError` in its thread,
  so an endless generator stops instead of running for nobody.

The pool's threads are daemon threads: a request stuck in the app must not keep the process
alive after the shard's shutdown deadline has passed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any
from urllib.parse import unquote_to_bytes
from wsgiref.util import FileWrapper

from shardcorn.loading import Receive, Scope, Send

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], None]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

DEFAULT_THREADS = 10  # uvicorn's WSGI middleware and a2wsgi use the same default


class ClientDisconnectedError(OSError):
    """The client went away (or the server stopped) while the app was reading or writing."""


class _ThreadPool:
    """``size`` daemon threads taking jobs from one queue, started with the first job."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        if len(self.threads) < self.size:
            with self.lock:
                while len(self.threads) < self.size:
                    thread = threading.Thread(
                        target=self._work, name=f"shardcorn-wsgi-{len(self.threads)}", daemon=True
                    )
                    thread.start()
                    self.threads.append(thread)
        self.jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            job()

    def shutdown(self) -> None:
        """Let every thread finish its job in hand, then end (does not wait for them)."""
        with self.lock:
            for _ in self.threads:
                self.jobs.put(None)
            self.threads = []


class _Exchange:
    """One request, shared by the loop (pump, send) and the app's thread (read, write)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Send) -> None:
        self.loop = loop
        self.send = send
        self.cond = threading.Condition()
        self.chunks: deque[bytes] = deque()
        self.more_body = True
        self.gone = False  # the client disconnected, or the request was cancelled
        self.wanted = asyncio.Event()  # the thread waits for body
        self.pending: set[concurrent.futures.Future[None]] = set()

    # -- the loop's side -------------------------------------------------------------------
    async def pump(self, receive: Receive, expect_continue: bool) -> None:
        """Keep one body chunk ready for the thread; after the body, wait for a disconnect.

        With ``Expect: 100-continue`` nothing is read until the app asks: our first
        receive() is what tells the client to go ahead.
        """
        wait_for_thread = expect_continue
        try:
            while True:
                if wait_for_thread:
                    await self.wanted.wait()
                    self.wanted.clear()
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                with self.cond:
                    body = message.get("body", b"")
                    if body:
                        self.chunks.append(body)
                    self.more_body = message.get("more_body", False)
                    self.cond.notify_all()
                # Read ahead one chunk, no more: the next waits until the thread took it.
                wait_for_thread = self.more_body
        finally:
            # However the pump ends, a thread waiting for body must not wait forever.
            self.close()

    def close(self) -> None:
        """The client is gone or the request is over: nothing the thread waits for comes."""
        with self.cond:
            self.gone = True
            self.cond.notify_all()
        for future in self.pending:
            if not future.done():
                future.set_exception(ClientDisconnectedError("the client disconnected"))
        self.pending.clear()

    def _start_send(
        self, messages: list[dict[str, Any]], done: concurrent.futures.Future[None]
    ) -> None:
        if self.gone:
            done.set_exception(ClientDisconnectedError("the client disconnected"))
            return
        self.pending.add(done)
        task = self.loop.create_task(self._send_all(messages))
        task.add_done_callback(lambda task: self._finish_send(task, done))

    async def _send_all(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            await self.send(message)

    def _finish_send(self, task: asyncio.Task[None], done: concurrent.futures.Future[None]) -> None:
        self.pending.discard(done)
        if done.done():
            return  # close() already failed it
        if task.cancelled():
            done.set_exception(ClientDisconnectedError("the server is shutting down"))
        elif task.exception() is not None:
            done.set_exception(task.exception())
        else:
            done.set_result(None)

    # -- the app thread's side -------------------------------------------------------------
    def next_chunk(self) -> bytes:
        """Block until the next piece of request body; b"" once it has all been read."""
        with self.cond:
            while not self.chunks:
                if not self.more_body:
                    return b""
                if self.gone:
                    raise ClientDisconnectedError("the client disconnected while sending the body")
                self._call_soon(self.wanted.set)
                self.cond.wait()
            return self.chunks.popleft()

    def send_from_thread(self, messages: list[dict[str, Any]]) -> None:
        """Send on the loop and wait until it is sent (or the send failed)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._call_soon(self._start_send, messages, done)
        done.result()

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the shard has stopped
            raise ClientDisconnectedError("the server has stopped") from None


class _Input:
    """``wsgi.input``: the request body, read from the exchange as the app asks for it."""

    def __init__(self, exchange: _Exchange) -> None:
        self._next_chunk = exchange.next_chunk
        self._buffer = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._next_chunk()
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        searched = 0
        while True:
            newline = self._buffer.find(b"\n", searched)
            if newline >= 0:
                end = newline + 1
                break
            searched = len(self._buffer)
            if 0 <= limit <= searched or not self._fill():
                end = len(self._buffer)
                break
        return self._take(end if limit < 0 else min(end, limit))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> _Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class _Response:
    """start_response() and write() for one request; sends the head with the first bytes."""

    def __init__(self, exchange: _Exchange) -> None:
        self.exchange = exchange
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_sent = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            # PEP 3333: with the head already out the error cannot change it; re-raise.
            if self.head_sent:
                raise exc_info[1].with_traceback(exc_info[2])
        elif self.status is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        self.status = _parse_status(status)
        self.headers = [_encode_header(name, value) for name, value in headers]
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's legacy write(): send now."""
        if data:
            self.emit(data, more_body=True)

    def emit(self, body: bytes, more_body: bool) -> None:
        messages: list[dict[str, Any]] = []
        if not self.head_sent:
            if self.status is None:
                raise RuntimeError("the WSGI app sent a body before calling start_response()")
            messages.append(
                {"type": "http.response.start", "status": self.status, "headers": self.headers}
            )
            self.head_sent = True
        messages.append({"type": "http.response.body", "body": body, "more_body": more_body})
        self.exchange.send_from_thread(messages)


def _parse_status(status: str) -> int:
    code = status.split(" ", 1)[0]
    if len(code) != 3 or not code.isascii() or not code.isdigit():
        raise RuntimeError(f"invalid WSGI status {status!r}: expected e.g. '200 OK'")
    return int(code)


def _encode_header(name: str, value: str) -> tuple[bytes, bytes]:
    try:
        return name.lower().encode("latin-1"), value.encode("latin-1")
    except (UnicodeEncodeError, AttributeError):
        raise RuntimeError(
            f"invalid WSGI header {name!r}: {value!r} (Latin-1 str expected)"
        ) from None


def build_environ(scope: Scope, body: Any) -> dict[str, Any]:
    """The PEP 3333 environ for an ASGI HTTP scope. Strings hold bytes as Latin-1."""
    root_path: str = scope.get("root_path", "")
    script_name = root_path.encode("utf-8")
    raw_path: bytes | None = scope.get("raw_path")
    # CGI's PATH_INFO is percent-decoded; from raw_path that keeps bytes that are not UTF-8.
    path = unquote_to_bytes(raw_path) if raw_path is not None else scope["path"].encode("utf-8")
    # ASGI's path (and shardcorn's raw_path) include root_path; WSGI splits it off.
    if script_name and path.startswith(script_name):
        path = path[len(script_name) :]
    server = scope.get("server") or ("localhost", 443 if scope["scheme"] == "https" else 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name.decode("latin-1"),
        "PATH_INFO": path.decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope["scheme"],
        "wsgi.input": body,
        # The body ends where the request does, also without Content-Length (chunked):
        # apps that honour this (werkzeug does) read to the end instead of reading nothing.
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1")
        if "_" in name:
            # CGI spells "-" as "_", so "X_Forwarded_For" would arrive as the same key as
            # X-Forwarded-For and could stand in for it; nginx and gunicorn drop these too.
            continue
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        value = raw_value.decode("latin-1")
        if key in environ:
            value = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        environ[key] = value
    return environ


class WSGIAdapter:
    """An ASGI 3 app that runs a WSGI app's requests in ``threads`` threads."""

    def __init__(self, app: WSGIApp, threads: int = DEFAULT_THREADS) -> None:
        self.app = app
        self.pool = _ThreadPool(threads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect; WSGI has no WebSockets: the server sends 403
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.pool.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        exchange = _Exchange(loop, send)
        environ = build_environ(scope, _Input(exchange))
        finished: asyncio.Future[None] = loop.create_future()
        context = contextvars.copy_context()  # the app's thread sees the request's context

        def job() -> None:
            try:
                context.run(self._run, environ, exchange)
            except BaseException as exc:
                _resolve(loop, finished, exc)
            else:
                _resolve(loop, finished, None)

        expect_continue = any(
            name == b"expect" and value.lower() == b"100-continue"
            for name, value in scope["headers"]
        )
        pump = loop.create_task(exchange.pump(receive, expect_continue))
        self.pool.submit(job)
        try:
            await finished
        except ClientDisconnectedError:
            pass  # nobody to answer; the server knows the client is gone
        finally:
            pump.cancel()
            exchange.close()

    def _run(self, environ: dict[str, Any], exchange: _Exchange) -> None:
        response = _Response(exchange)
        iterable = self.app(environ, response.start_response)
        try:
            if isinstance(iterable, (list, tuple)) and len(iterable) == 1:
                # The common `return [body]`: head and body in one send, framed with a length.
                response.emit(iterable[0], more_body=False)
                return
            for chunk in iterable:
                if chunk:
                    response.emit(chunk, more_body=True)
            response.emit(b"", more_body=False)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()  # PEP 3333: always, even when iteration failed


def _resolve(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], exc: BaseException | None
) -> None:
    def settle() -> None:
        if future.done():
            return  # the request was cancelled meanwhile
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)

    # A closed loop means the shard has stopped: nobody waits for this request any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)
