"""The HTTP scope an app is given, checked field by field (ASGI HTTP spec 2.x)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.protocol.memory import CLIENT, SERVER, Client, connect, make_context


class ScopeApp:
    """Answers 200 and remembers every scope it was given."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def scope_of(
    loop: asyncio.AbstractEventLoop, request: bytes, byte_by_byte: bool = False, **settings: Any
) -> dict[str, Any]:
    app = ScopeApp()
    client = connect(loop, app, **settings)
    client.send(request, byte_by_byte=byte_by_byte)
    assert client.read_response().status == 200
    client.close()
    assert len(app.scopes) == 1
    return app.scopes[0]


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_basic_scope(loop: asyncio.AbstractEventLoop, byte_by_byte: bool) -> None:
    scope = scope_of(loop, b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\n\r\n", byte_by_byte)
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/a/b"
    assert scope["raw_path"] == b"/a/b"
    assert scope["query_string"] == b"x=1&y=2"
    assert scope["root_path"] == ""
    assert scope["headers"] == [(b"host", b"example.com")]
    assert scope["client"] == CLIENT
    assert scope["server"] == SERVER
    assert scope["state"] == {}


def test_http_10(loop: asyncio.AbstractEventLoop) -> None:
    scope = scope_of(loop, b"GET / HTTP/1.0\r\n\r\n")
    assert scope["http_version"] == "1.0"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND"])
def test_methods(loop: asyncio.AbstractEventLoop, method: str) -> None:
    request = f"{method} / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".encode()
    assert scope_of(loop, request)["method"] == method


def test_path_is_percent_decoded_utf8(loop: asyncio.AbstractEventLoop) -> None:
    scope = scope_of(loop, b"GET /caf%C3%A9/a%20b%2Fc?q=%C3%A9 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert scope["path"] == "/café/a b/c"
    assert scope["raw_path"] == b"/caf%C3%A9/a%20b%2Fc"
    assert scope["query_string"] == b"q=%C3%A9"  # the query string is never decoded


def test_path_invalid_utf8_is_replaced(loop: asyncio.AbstractEventLoop) -> None:
    scope = scope_of(loop, b"GET /%FF HTTP/1.1\r\nHost: a\r\n\r\n")
    assert scope["path"] == "/\ufffd"
    assert scope["raw_path"] == b"/%FF"


def test_fragment_and_empty_query(loop: asyncio.AbstractEventLoop) -> None:
    scope = scope_of(loop, b"GET /p?#frag HTTP/1.1\r\nHost: a\r\n\r\n")
    assert scope["path"] == "/p"
    assert scope["query_string"] == b""


def test_absolute_form_target(loop: asyncio.AbstractEventLoop) -> None:
    scope = scope_of(loop, b"GET http://example.com/x/y?z=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert scope["path"] == "/x/y"
    assert scope["raw_path"] == b"/x/y"
    assert scope["query_string"] == b"z=1"


def test_asterisk_form(loop: asyncio.AbstractEventLoop) -> None:
    scope = scope_of(loop, b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert scope["method"] == "OPTIONS"
    assert scope["path"] == "*"


def test_root_path_is_included_in_path(loop: asyncio.AbstractEventLoop) -> None:
    # Like uvicorn >= 0.26: path and raw_path carry the root_path prefix.
    scope = scope_of(loop, b"GET /items/1?a=b HTTP/1.1\r\nHost: a\r\n\r\n", root_path="/api")
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/items/1"
    assert scope["raw_path"] == b"/api/items/1"
    assert scope["query_string"] == b"a=b"


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_headers_lowercased_raw_ordered_duplicates_kept(
    loop: asyncio.AbstractEventLoop, byte_by_byte: bool
) -> None:
    request = (
        b"GET / HTTP/1.1\r\n"
        b"Host: a\r\n"
        b"X-Multi: one\r\n"
        b"Accept: */*\r\n"
        b"X-MULTI: two\r\n"
        b"X-Latin: caf\xe9\r\n"
        b"X-Spaces:   padded value  \r\n"
        b"Cookie: a=1\r\n"
        b"cookie: b=2\r\n"
        b"\r\n"
    )
    scope = scope_of(loop, request, byte_by_byte)
    assert scope["headers"] == [
        (b"host", b"a"),
        (b"x-multi", b"one"),
        (b"accept", b"*/*"),
        (b"x-multi", b"two"),
        (b"x-latin", b"caf\xe9"),
        (b"x-spaces", b"padded value"),
        (b"cookie", b"a=1"),
        (b"cookie", b"b=2"),
    ]
    assert all(type(n) is bytes and type(v) is bytes for n, v in scope["headers"])


def test_client_and_server_ipv6(loop: asyncio.AbstractEventLoop) -> None:
    app = ScopeApp()
    client = connect(loop, app)
    client.transport.extra = {"peername": ("::1", 40000, 0, 0), "sockname": ("::1", 8443, 0, 0)}
    client.protocol.connection_made(client.transport)  # re-read the addresses
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.read_response()
    client.close()
    assert app.scopes[0]["client"] == ("::1", 40000)
    assert app.scopes[0]["server"] == ("::1", 8443)


def test_unix_socket_has_no_client_address(loop: asyncio.AbstractEventLoop) -> None:
    app = ScopeApp()
    client = connect(loop, app)
    client.transport.extra = {"peername": "", "sockname": "/tmp/s.sock"}
    client.protocol.connection_made(client.transport)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.read_response()
    client.close()
    assert app.scopes[0]["client"] is None
    assert app.scopes[0]["server"] is None


def test_state_is_a_shallow_copy_per_request(loop: asyncio.AbstractEventLoop) -> None:
    seen: list[dict[str, Any]] = []
    shared = {"items": []}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["state"])
        scope["state"]["mine"] = len(seen)  # a change to the copy...
        scope["state"]["items"].append(len(seen))  # ...and to an object it shares
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body"})

    ctx = make_context(loop, app)
    ctx.lifespan_state.update({"db": "conn", "items": shared["items"]})
    client = connect(loop, ctx=ctx)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 2)
    client.read_response()
    client.read_response()
    client.close()
    assert len(seen) == 2
    assert seen[0] is not seen[1] and seen[0] is not ctx.lifespan_state
    assert seen[1]["db"] == "conn"
    assert seen[1]["mine"] == 2  # the first request's "mine" did not leak into the second's
    assert "mine" not in ctx.lifespan_state
    assert ctx.lifespan_state["items"] == [1, 2]  # shallow: shared objects are shared


def test_scope_per_request_on_one_connection(loop: asyncio.AbstractEventLoop) -> None:
    app = ScopeApp()
    client: Client = connect(loop, app)
    client.send(b"GET /one HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n")
    client.read_response()
    client.send(b"POST /two?q HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n")
    client.read_response()
    client.close()
    first, second = app.scopes
    assert (first["method"], first["path"], first["query_string"]) == ("GET", "/one", b"")
    assert first["headers"] == [(b"host", b"a"), (b"x-a", b"1")]
    assert (second["method"], second["path"], second["query_string"]) == ("POST", "/two", b"q")
    assert second["headers"] == [(b"host", b"b"), (b"content-length", b"0")]
