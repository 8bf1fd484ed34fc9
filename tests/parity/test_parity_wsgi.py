"""--interface wsgi: PEP 3333 apps (a hand-written one, Flask, the stdlib's demo app) on a real
server: the environ, the request body streamed to the app as it arrives, the response streamed
with backpressure, a disconnect stopping an endless response, errors."""

from __future__ import annotations

import hashlib
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import flask
import httpx
import pytest

from shardcorn.testing import serve_in_thread, shardcorn_command
from tests.parity.helpers import spawn, wait_ready

Environ = dict[str, Any]
TIMEOUT = 10.0


def environ_app(environ: Environ, start_response: Any) -> list[bytes]:
    """Answers with the environ's string values, one ``KEY=value`` per line."""
    body = environ["wsgi.input"].read()
    lines = [f"{key}={value}" for key, value in sorted(environ.items()) if isinstance(value, str)]
    lines.append(f"body={len(body)}")
    lines.append(f"url_scheme={environ['wsgi.url_scheme']}")
    lines.append(f"multithread={environ['wsgi.multithread']}")
    start_response("200 OK", [("Content-Type", "text/plain; charset=latin-1")])
    return ["\n".join(lines).encode("latin-1")]


def parse(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_environ() -> None:
    with serve_in_thread(environ_app, interface="wsgi", root_path="/mount") as server:
        response = httpx.post(
            server.url + "/caf%C3%A9/a%2Fb?q=1&r=%20",
            content=b"0123456789",
            headers={"X-Custom": "one", "Content-Type": "text/x-test", "Cookie": "a=1"},
        )
    env = parse(response.text)
    assert response.status_code == 200
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/mount"
    # PEP 3333: PATH_INFO is the decoded bytes, held in a str as Latin-1.
    assert env["PATH_INFO"] == "/café/a/b".encode().decode("latin-1")
    assert env["QUERY_STRING"] == "q=1&r=%20"
    assert env["CONTENT_TYPE"] == "text/x-test"
    assert env["CONTENT_LENGTH"] == "10"
    assert env["HTTP_X_CUSTOM"] == "one"
    assert env["HTTP_COOKIE"] == "a=1"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["body"] == "10"
    assert env["url_scheme"] == "http"
    assert env["multithread"] == "True"


def test_path_bytes_that_are_not_utf8_survive() -> None:
    with serve_in_thread(environ_app, interface="wsgi") as server:
        response = httpx.get(server.url + "/%FF%2541")
    # Decoded once: %FF is the byte 0xff, %25 a literal "%" (not decoded a second time).
    assert parse(response.text)["PATH_INFO"] == "/\xff%41"


def test_header_with_underscore_cannot_pose_as_another() -> None:
    with serve_in_thread(environ_app, interface="wsgi") as server:
        response = httpx.get(server.url + "/", headers={"X_Forwarded_For": "6.6.6.6"})
    assert "HTTP_X_FORWARDED_FOR" not in parse(response.text)


def test_repeated_headers_are_joined() -> None:
    with serve_in_thread(environ_app, interface="wsgi") as server:
        response = httpx.get(server.url + "/", headers=[("x-a", "1"), ("x-a", "2")])
    assert parse(response.text)["HTTP_X_A"] == "1,2"


def test_auto_interface_detects_wsgi() -> None:
    with serve_in_thread(environ_app) as server:
        response = httpx.get(server.url + "/auto")
    assert parse(response.text)["PATH_INFO"] == "/auto"


def test_request_body_reaches_the_app_while_it_is_still_being_sent() -> None:
    first_part_seen = threading.Event()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        first = stream.read(5)
        first_part_seen.set()
        rest = stream.read()
        start_response("200 OK", [])
        return [first + b"|" + rest]

    def upload() -> Iterator[bytes]:
        yield b"first"
        # An adapter that buffered the whole body first would never let the app see this
        # part before the rest is sent: the wait would time out.
        assert first_part_seen.wait(TIMEOUT)
        yield b"second"

    with serve_in_thread(app, interface="wsgi") as server:
        response = httpx.post(server.url + "/", content=upload())
    assert response.text == "first|second"


def test_large_chunked_upload_readline_and_iteration() -> None:
    lines = [b"line %d " % i + b"x" * (i % 700) + b"\n" for i in range(20000)]
    payload = b"".join(lines)

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        digest = hashlib.sha256()
        first = stream.readline()
        second = stream.readline(3)
        digest.update(first + second)
        count = 2
        for line in stream:
            digest.update(line)
            count += 1
        start_response("200 OK", [])
        return [f"{count} {digest.hexdigest()}".encode()]

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 50_000):
            yield payload[start : start + 50_000]

    with serve_in_thread(app, interface="wsgi") as server:
        response = httpx.post(server.url + "/", content=chunks(), timeout=TIMEOUT)
    # readline(3) split the second line in two: one more piece than lines.
    assert response.text == f"{len(lines) + 1} {hashlib.sha256(payload).hexdigest()}"


def test_expect_100_continue_is_sent_when_the_app_reads() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [body.upper()]

    with (
        serve_in_thread(app, interface="wsgi") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        reply = b""
        while not reply.endswith(b"HELLO"):
            data = sock.recv(65536)
            assert data
            reply += data
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")


def test_streamed_response_and_legacy_write() -> None:
    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")

        def rest() -> Iterator[bytes]:
            yield b""  # an empty chunk must not end the response or send a head early
            yield b"one;"
            yield b"two"

        return rest()

    with serve_in_thread(app, interface="wsgi") as server:
        response = httpx.get(server.url + "/")
        head = httpx.head(server.url + "/")
    assert response.text == "written;one;two"
    assert response.headers["transfer-encoding"] == "chunked"
    assert head.status_code == 200
    assert head.content == b""


def test_response_backpressure() -> None:
    """A client that does not read stops the app's iteration once the buffers are full."""
    chunk = b"x" * (256 * 1024)
    total_chunks = 128  # 32 MiB
    runaway_after = 64  # 16 MiB: more than localhost socket buffers and the transport hold
    produced = 0
    runaway = threading.Event()
    finished = threading.Event()

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        nonlocal produced
        start_response("200 OK", [("Content-Length", str(len(chunk) * total_chunks))])
        for _ in range(total_chunks):
            produced += 1
            if produced > runaway_after:
                runaway.set()
            yield chunk
        finished.set()

    with (
        serve_in_thread(app, interface="wsgi") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # Nothing is read: without backpressure the whole response would be produced at once.
        assert not runaway.wait(1.0), f"the app produced {produced} chunks for a stalled client"
        received = 0
        expected = len(chunk) * total_chunks
        while received < expected:
            data = sock.recv(1 << 20)
            assert data
            received += len(data)
        assert finished.wait(TIMEOUT)
    assert received >= expected


def test_disconnect_stops_an_endless_response() -> None:
    closed = threading.Event()

    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])

        def forever() -> Iterator[bytes]:
            try:
                while True:
                    yield b"tick\n" * 1000
            finally:
                closed.set()  # PEP 3333: the server closes the iterable

        return forever()

    with serve_in_thread(app, interface="wsgi") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"tick" in sock.recv(65536)
        assert closed.wait(TIMEOUT)


def test_app_errors_become_500() -> None:
    def broken(environ: Environ, start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    def no_start(environ: Environ, start_response: Any) -> list[bytes]:
        return [b"body without a status"]

    def bad_status(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("OK", [])
        return [b""]

    for app in (broken, no_start, bad_status):
        with serve_in_thread(app, interface="wsgi") as server:
            assert httpx.get(server.url + "/").status_code == 500


def test_error_after_start_response_with_exc_info() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Internal Server Error", [("X-Error", "1")], sys.exc_info())
        return [b"replaced"]

    with serve_in_thread(app, interface="wsgi") as server:
        response = httpx.get(server.url + "/")
    assert response.status_code == 500
    assert response.headers["x-error"] == "1"
    assert response.text == "replaced"


def test_flask_app() -> None:
    app = flask.Flask("parity")

    @app.post("/items/<name>")
    def create(name: str) -> Any:
        return {"name": name, "json": flask.request.get_json(), "root": flask.request.root_path}

    @app.get("/stream")
    def stream() -> Any:
        return flask.Response((f"{i}\n" for i in range(3)), mimetype="text/plain")

    with serve_in_thread(app, root_path="/shop") as server, httpx.Client() as client:
        created = client.post(server.url + "/items/apple", json={"qty": 3})
        streamed = client.get(server.url + "/stream")
        missing = client.get(server.url + "/nowhere")
    assert created.status_code == 200
    assert created.json() == {"name": "apple", "json": {"qty": 3}, "root": "/shop"}
    assert streamed.text == "0\n1\n2\n"
    assert missing.status_code == 404


def test_wsgi_from_the_command_line() -> None:
    args = ["wsgiref.simple_server:demo_app", "--interface", "wsgi", "--port", "0",
            "--wsgi-threads", "2"]  # fmt: skip
    with spawn(shardcorn_command(args)) as server:
        wait_ready(server)
        response = httpx.get(server.url + "/hello?x=1")
    assert response.status_code == 200
    assert response.text.startswith("Hello world!")
    assert "PATH_INFO = '/hello'" in response.text


@pytest.mark.parametrize("threads", [1, 3])
def test_thread_pool_runs_requests_side_by_side(threads: int) -> None:
    """With N threads, N requests are inside the app at once; the N+1st waits for one."""
    inside = threading.Semaphore(0)
    release = threading.Event()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        inside.release()
        assert release.wait(TIMEOUT)
        start_response("200 OK", [])
        return [threading.current_thread().name.encode()]

    results: list[str] = []

    def call(url: str) -> None:
        results.append(httpx.get(url, timeout=TIMEOUT).text)

    with serve_in_thread(app, interface="wsgi", wsgi_threads=threads) as server:
        callers = [threading.Thread(target=call, args=(server.url,)) for _ in range(threads + 1)]
        for caller in callers:
            caller.start()
        for _ in range(threads):
            assert inside.acquire(timeout=TIMEOUT)
        assert not inside.acquire(timeout=0.5), "more requests in the app than threads"
        release.set()
        for caller in callers:
            caller.join(TIMEOUT)
    assert len(results) == threads + 1
    assert len(set(results)) == threads
    assert all(name.startswith("shardcorn-wsgi-") for name in results)
