"""Property tests (hypothesis) of the HTTP protocol, bytes in and bytes out.

1. Any bytes, cut anywhere: every response is the app's 200 or one final refusal (a 4xx, or
   501/505) with ``Connection: close``; nothing escapes the protocol as an exception; and the
   connection is never left hanging: it is closed, or waits with a deadline armed.
2. Requests shardcorn accepts are parsed the way h11 parses the same bytes: method, path,
   raw_path, query_string, headers and http_version all match. Two leniencies the RFC allows
   are undone before h11 sees the bytes: empty lines before the request line (RFC 9112 2.2,
   "SHOULD ignore at least one") and runs of spaces between request-line words (RFC 9112 3,
   "MAY ... parse on whitespace-delimited word boundaries"); h11 refuses both.

The examples are derandomized and kept moderate, so the suite is fast and never flaky.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import h11
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shardcorn.protocol.context import ShardContext
from shardcorn.protocol.http import HttpProtocol
from tests.hardening.wire import BodyReader, deliver
from tests.protocol.memory import Client, make_context, parse_responses

Message = dict[str, Any]
REFUSALS = {400, 408, 413, 414, 431, 501, 505}
SETTINGS = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- generating requests ----------------------------------------------------------------------
# Each part of a request comes clean (what a client may send) or, now and then, noisy (what it
# may not). Most requests are all clean, so that a good share is accepted and compared.
TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN = st.text(TOKEN_CHARS, min_size=1, max_size=12).map(str.encode)
VCHAR = bytes(range(0x21, 0x7F))


def one_byte(values: bytes) -> st.SearchStrategy[bytes]:
    return st.sampled_from(list(values)).map(lambda b: bytes([b]))


CLEAN_METHOD = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH"])
NOISY_METHOD = st.one_of(TOKEN, st.sampled_from([b"get", b"CONNECT", b"PRI", b"G@T", b""]))
PIECES = [b"%41", b"%e2%82%ac", b"%0a", b"%", b"?", b"#", b"/", b"//", b"?a=1&b=2"]
CLEAN_PATH = st.lists(st.one_of(one_byte(VCHAR), st.sampled_from(PIECES)), max_size=16)
NOISY_PATH = st.lists(one_byte(VCHAR + b"\x00\x09\x7f\x80\xff "), max_size=16)
CLEAN_VERSION = st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"])
NOISY_VERSION = st.sampled_from([b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/1.10", b"http/1.1"])
CLEAN_VALUE = st.lists(one_byte(VCHAR + b" \t\x80\xe9\xff"), max_size=16).map(b"".join)
NOISY_VALUE = st.lists(one_byte(VCHAR + b"\x00\x01\x0b\x1b\x7f\r\n"), max_size=16).map(b"".join)
NOISY_NAME = st.sampled_from([b"X Bad", b"X:", b"", b"X\x00", b"\xc3\xa9"])
OWS = st.sampled_from([b"", b" ", b" ", b"  ", b"\t", b" \t "])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    def clean() -> bool:
        return draw(st.integers(0, 19)) > 0  # each part is noisy one time in twenty

    lead = b"\r\n" if not clean() else b""
    method = draw(CLEAN_METHOD if clean() else NOISY_METHOD)
    path = b"".join(draw(CLEAN_PATH if clean() else NOISY_PATH))
    shape = draw(st.integers(0, 9))
    target = b"*" if shape == 0 else b"http://example.com/" + path if shape == 1 else b"/" + path
    space = b" " if clean() else b"  "
    version = draw(CLEAN_VERSION if clean() else NOISY_VERSION)
    fields = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(TOKEN if clean() else NOISY_NAME)
        value = draw(CLEAN_VALUE if clean() else NOISY_VALUE)
        fields.append(name + b":" + draw(OWS) + value + draw(OWS) + b"\r\n")
    host = draw(
        st.sampled_from([b"a", b"example.com:8000", b"[::1]", b""])
        if clean()
        else st.sampled_from([b"a b", b"a/b", b"u@a"])
    )
    hosts = 1 if clean() else draw(st.sampled_from([0, 2]))
    fields += [b"Host: " + host + b"\r\n"] * hosts
    fields = draw(st.permutations(fields))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b""
    if framing == "length":
        fields.append(b"Content-Length: 3\r\n")
        body = b"abc"
    elif framing == "chunked":
        fields.append(b"Transfer-Encoding: chunked\r\n")
        body = b"3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
    request_line = method + space + target + space + version + b"\r\n"
    return lead + request_line + b"".join(fields) + b"\r\n" + body


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A request with a few bytes inserted, deleted or replaced: near-misses reach deep."""
    data = bytearray(draw(requests()))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from(b"\x00\r\n \t:;,0aF\x7f\x80\xff-+x"))
        if kind == "insert":
            data.insert(position, byte)
        elif position < len(data):
            if kind == "delete":
                del data[position]
            else:
                data[position] = byte
    return bytes(data)


ANY_BYTES = st.one_of(st.binary(max_size=300), requests(), mutated())
SPLITS = st.lists(st.integers(0, 400), max_size=4)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({min(p, len(data)) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a] or [data]


# -- property 1: a valid request or a refusal, no exception, no hang ---------------------------
def waits_with_a_deadline(protocol: HttpProtocol) -> bool:
    """Open and not closing: some timer will end the wait if the client never sends more."""
    if protocol.in_head:
        return protocol.head_deadline is not None
    if protocol.parsing is not None:
        return protocol.body_timer is not None
    return protocol.idle_since is not None  # idle: the keep-alive timer


class Errors:
    """Collects what reaches the loop's exception handler: an exception out of a callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.seen: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: self.seen.append(context))


@SETTINGS
@given(data=ANY_BYTES, points=SPLITS)
def test_any_bytes_give_requests_or_one_refusal(
    loop: asyncio.AbstractEventLoop, data: bytes, points: list[int]
) -> None:
    errors = Errors(loop)
    app = BodyReader(echo_path=False)
    ctx = make_context(loop, app)
    client = deliver(loop, ctx, cut(data, points))
    client.spin(5)
    closed = client.transport.closing
    responses = parse_responses(client.output, eof=closed)
    statuses = [r.status for r in responses]
    for response in responses[:-1]:
        assert response.status == 200, statuses
    if statuses and statuses[-1] != 200:
        assert statuses[-1] in REFUSALS, statuses
        assert responses[-1].header(b"connection") == b"close"
        client.wait_closed()
    elif not closed:
        assert waits_with_a_deadline(client.protocol), data
    assert len(statuses) == len(app.completed) + (statuses[-1:] != [200] and bool(statuses))
    client.close()  # the client goes: every app still waiting is told, nothing stays pending
    client.spin(5)
    assert errors.seen == []


# -- property 2: the same scope as h11 --------------------------------------------------------
def h11_request(data: bytes) -> h11.Request | None:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError:
        return None
    return event if isinstance(event, h11.Request) else None


def undo_leniencies(data: bytes) -> bytes:
    data = data.lstrip(b"\r\n")
    line, sep, rest = data.partition(b"\r\n")
    return re.sub(rb" +", b" ", line) + sep + rest


def expected_scope(request: h11.Request) -> dict[str, Any]:
    target = request.target
    if target == b"*":
        raw_path, query = b"*", b""
    elif target.startswith(b"/"):
        raw_path, _, query = target.partition(b"?")
        raw_path, query = raw_path.partition(b"#")[0], query.partition(b"#")[0]
    else:
        parts = urlsplit(target.decode("latin-1"))
        raw_path, query = (parts.path or "/").encode("latin-1"), parts.query.encode("latin-1")
    return {
        "method": request.method.decode("ascii"),
        "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
        "raw_path": raw_path,
        "query_string": query,
        "headers": [(bytes(name), bytes(value)) for name, value in request.headers],
        "http_version": request.http_version.decode("ascii"),
    }


class ScopeRecorder:
    def __init__(self) -> None:
        self.scopes: list[Message] = []

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        await BodyReader(echo_path=False)(scope, receive, send)


def first_scope(loop: asyncio.AbstractEventLoop, ctx: ShardContext, data: bytes) -> Message | None:
    app = ctx.app
    assert isinstance(app, ScopeRecorder)
    app.scopes.clear()
    client: Client = deliver(loop, ctx, [data])
    client.spin(5)
    client.close()
    return app.scopes[0] if app.scopes else None


@pytest.mark.parametrize("loop_name", ["asyncio"])
@SETTINGS
@given(data=st.one_of(requests(), requests(), requests(), mutated()))
def test_accepted_requests_parse_as_h11_parses_them(
    loop: asyncio.AbstractEventLoop, data: bytes
) -> None:
    ctx = make_context(loop, ScopeRecorder())
    scope = first_scope(loop, ctx, data)
    event("accepted" if scope is not None else "refused")
    if scope is None:
        return  # refused (or incomplete): nothing to compare
    request = h11_request(undo_leniencies(data))
    assert request is not None, f"shardcorn accepted what h11 refuses: {data!r}"
    ours = {key: scope[key] for key in expected_scope(request)}
    assert ours == expected_scope(request), data


def test_the_samples_reach_both_outcomes(loop: asyncio.AbstractEventLoop) -> None:
    # The two leniencies are accepted; an invalid Host and a NUL in the target are not.
    ctx = make_context(loop, ScopeRecorder())
    outcomes = [first_scope(loop, ctx, data) is not None for data in SAMPLES]
    assert outcomes == [True, True, True, False, False]
    for data in SAMPLES[:3]:
        scope = first_scope(loop, ctx, data)
        request = h11_request(undo_leniencies(data))
        assert scope is not None and request is not None
        assert {key: scope[key] for key in expected_scope(request)} == expected_scope(request)


SAMPLES = [
    b"GET /a?b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET  /a HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\r\nPOST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /a HTTP/1.1\r\nHost: a b\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
]
