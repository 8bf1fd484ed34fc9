"""Request smuggling and malformed requests, bytes in and bytes out.

Every case is a hostile request followed by a valid one (``FOLLOW``). Each must get exactly
one response, with the status the cited RFC section asks for and ``Connection: close``; the
connection then closes; the app never gets a complete request, and never sees the valid one
(nothing after the hostile bytes is processed). Each case is delivered whole, split in two at
every byte, and one byte at a time: the verdict must not depend on how TCP cut the bytes.

RFC 9110 is HTTP semantics, RFC 9112 is HTTP/1.1 message syntax; the section is in each case's
id. Where the RFC lets a server either reject or repair, shardcorn rejects.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from tests.hardening.wire import FOLLOW, BodyReader, assert_refused, deliver, only_response, pieces
from tests.protocol.memory import make_context, parse_responses

POST = b"POST / HTTP/1.1\r\nHost: a\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"


@dataclass(frozen=True)
class Case:
    name: str
    rfc: str  # where the expected status comes from
    request: bytes
    status: int

    @property
    def id(self) -> str:
        return f"{self.name}-{self.rfc}"


CASES = [
    # -- Content-Length ----------------------------------------------------------------------
    # RFC 9112 6.3 (3): both present "ought to be handled as an error"; 6.1: a server that
    # does not reject it MUST close anyway. We reject.
    Case(
        "cl-and-te",
        "RFC9112-6.3",
        POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    Case(
        "te-and-cl",
        "RFC9112-6.3",
        POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        400,
    ),
    Case(
        "cl-and-te-http10",
        "RFC9112-6.1",
        b"POST / HTTP/1.0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    # RFC 9112 6.3 (5): an invalid Content-Length is an unrecoverable framing error, 400.
    Case(
        "cl-duplicate-differs",
        "RFC9112-6.3",
        POST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    # RFC 9110 8.6: identical duplicates MAY be merged or rejected; we reject.
    Case(
        "cl-duplicate-same",
        "RFC9110-8.6",
        POST + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    Case("cl-list", "RFC9110-8.6", POST + b"Content-Length: 2, 2\r\n\r\nab", 400),
    # RFC 9110 8.6: Content-Length = 1*DIGIT. No sign, no hex, no separators, not empty.
    Case("cl-plus", "RFC9110-8.6", POST + b"Content-Length: +2\r\n\r\nab", 400),
    Case("cl-minus", "RFC9110-8.6", POST + b"Content-Length: -2\r\n\r\nab", 400),
    Case("cl-hex", "RFC9110-8.6", POST + b"Content-Length: 0x2\r\n\r\nab", 400),
    Case("cl-underscore", "RFC9110-8.6", POST + b"Content-Length: 1_0\r\n\r\nab", 400),
    Case("cl-inner-space", "RFC9110-8.6", POST + b"Content-Length: 1 2\r\n\r\nab", 400),
    Case("cl-empty", "RFC9110-8.6", POST + b"Content-Length: \r\n\r\nab", 400),
    Case("cl-nul", "RFC9110-5.5", POST + b"Content-Length: 2\x00\r\n\r\nab", 400),
    # RFC 9110 8.6: "anticipate potentially large decimal numerals and prevent parsing errors
    # due to integer conversion overflows": past 2**64 (llhttp) and past 2**63-1 (ours).
    Case(
        "cl-overflow-2^64",
        "RFC9110-8.6",
        POST + b"Content-Length: 18446744073709551616\r\n\r\nab",
        400,
    ),
    Case(
        "cl-over-int64", "RFC9110-8.6", POST + b"Content-Length: 9223372036854775808\r\n\r\nab", 400
    ),
    Case("cl-enormous", "RFC9110-8.6", POST + b"Content-Length: " + b"9" * 40 + b"\r\n\r\nab", 400),
    Case("cl-obs-fold", "RFC9112-5.2", POST + b"Content-Length:\r\n 2\r\n\r\nab", 400),
    Case("cl-space-before-colon", "RFC9112-5.1", POST + b"Content-Length : 2\r\n\r\nab", 400),
    # -- Transfer-Encoding -----------------------------------------------------------------
    # RFC 9112 6.1: a transfer coding the server does not understand: 501.
    Case("te-unknown", "RFC9112-6.1", POST + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    Case("te-identity", "RFC9112-6.1", POST + b"Transfer-Encoding: identity\r\n\r\n", 501),
    Case("te-xchunked", "RFC9112-6.1", POST + b"Transfer-Encoding: xchunked\r\n\r\n", 501),
    Case("te-chunked-prefix", "RFC9112-6.1", POST + b"Transfer-Encoding: chunkedx\r\n\r\n", 501),
    Case(
        "te-unknown-then-chunked",
        "RFC9112-6.1",
        POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    # RFC 9112 6.3 (4): chunked present but not the final coding: 400 and close.
    Case(
        "te-chunked-not-last",
        "RFC9112-6.3",
        POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    # RFC 9112 7.1: chunked MUST NOT be applied more than once.
    Case(
        "te-repeated-fields",
        "RFC9112-7.1",
        POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    Case(
        "te-repeated-in-list",
        "RFC9112-7.1",
        POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    Case("te-empty", "RFC9112-6.1", POST + b"Transfer-Encoding: \r\n\r\n0\r\n\r\n", 400),
    # RFC 9112 5.2: obs-fold in a request: reject with 400 (or unfold; we reject).
    Case(
        "te-obs-fold", "RFC9112-5.2", POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400
    ),
    Case(
        "te-obs-fold-list",
        "RFC9112-5.2",
        POST + b"Transfer-Encoding: chunked\r\n , identity\r\n\r\n0\r\n\r\n",
        400,
    ),
    Case(
        "te-vertical-tab",
        "RFC9110-5.5",
        POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    # RFC 9112 5.1: whitespace between a field name and the colon: 400.
    Case(
        "te-space-before-colon",
        "RFC9112-5.1",
        POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing.
    Case(
        "te-in-http10",
        "RFC9112-6.1",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    # -- fields ------------------------------------------------------------------------------
    Case("obs-fold-any-field", "RFC9112-5.2", POST + b"X-A: a\r\n b\r\n\r\n", 400),
    Case("obs-fold-tab", "RFC9112-5.2", POST + b"X-A: a\r\n\tb\r\n\r\n", 400),
    # RFC 9112 2.2: whitespace before the first field line: reject (or skip the line).
    Case("space-before-first-field", "RFC9112-2.2", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    # RFC 9112 2.2: a bare CR is invalid; a bare LF MAY be taken as a line end, we do not.
    Case("bare-cr-in-value", "RFC9112-2.2", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
    Case("bare-cr-ends-field", "RFC9112-2.2", b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
    Case("bare-cr-ends-request-line", "RFC9112-2.2", b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
    Case("bare-lf-ends-field", "RFC9112-2.2", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
    Case("bare-lf-ends-head", "RFC9112-2.2", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    # RFC 9110 5.1: a field name is a token; RFC 9110 5.5: CR, LF, NUL (and other CTLs) are
    # not allowed in a value.
    Case("nul-in-name", "RFC9110-5.1", b"GET / HTTP/1.1\r\nHost: a\r\nX\x00: a\r\n\r\n", 400),
    Case("ctl-in-name", "RFC9110-5.1", b"GET / HTTP/1.1\r\nHost: a\r\nX\x01: a\r\n\r\n", 400),
    Case("utf8-in-name", "RFC9110-5.1", b"GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: a\r\n\r\n", 400),
    Case("empty-name", "RFC9110-5.1", b"GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n", 400),
    Case("nul-in-value", "RFC9110-5.5", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    Case("soh-in-value", "RFC9110-5.5", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
    Case("esc-in-value", "RFC9110-5.5", b"GET / HTTP/1.1\r\nHost: a\r\nX: \x1b[31m\r\n\r\n", 400),
    Case("del-in-value", "RFC9110-5.5", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
    Case("space-before-colon", "RFC9112-5.1", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    Case("tab-before-colon", "RFC9112-5.1", b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400),
    Case("no-colon", "RFC9112-5", b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),
    # -- Host ----------------------------------------------------------------------------------
    # RFC 9112 3.2: 400 for an HTTP/1.1 request without Host, for any request with more than
    # one, and for an invalid Host value.
    Case("host-missing", "RFC9112-3.2", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    Case("host-duplicate", "RFC9112-3.2", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    Case(
        "host-duplicate-same", "RFC9112-3.2", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400
    ),
    Case(
        "host-duplicate-http10", "RFC9112-3.2", b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400
    ),
    Case("host-with-space", "RFC9112-3.2", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    Case("host-with-slash", "RFC9112-3.2", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    Case("host-with-userinfo", "RFC9112-3.2", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    Case("host-obs-text", "RFC9112-3.2", b"GET / HTTP/1.1\r\nHost: a\xff\r\n\r\n", 400),
    # -- request line --------------------------------------------------------------------------
    Case("ctl-in-target", "RFC9112-3.2", b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    Case("del-in-target", "RFC9112-3.2", b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    Case("obs-text-in-target", "RFC9112-3.2", b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    Case("tab-in-target", "RFC9112-3", b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    Case("space-after-version", "RFC9112-3", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    Case("lowercase-version", "RFC9112-2.3", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    Case("version-two-digit-minor", "RFC9112-2.3", b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
    Case("version-letter", "RFC9112-2.3", b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400),
    # RFC 9110 15.6.6: a well-formed major version we do not support: 505.
    Case("version-2.0", "RFC9110-15.6.6", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    Case("version-1.2", "RFC9110-15.6.6", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    Case("version-0.9", "RFC9110-15.6.6", b"GET / HTTP/0.9\r\n\r\n", 505),
    # -- chunked bodies: RFC 9112 7.1, chunk-size = 1*HEXDIG ---------------------------------
    Case("chunk-size-plus", "RFC9112-7.1", CHUNKED + b"+1\r\na\r\n0\r\n\r\n", 400),
    Case("chunk-size-minus", "RFC9112-7.1", CHUNKED + b"-1\r\na\r\n0\r\n\r\n", 400),
    Case("chunk-size-0x", "RFC9112-7.1", CHUNKED + b"0x1\r\na\r\n0\r\n\r\n", 400),
    Case(
        "chunk-size-underscore",
        "RFC9112-7.1",
        CHUNKED + b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",
        400,
    ),
    Case("chunk-size-leading-space", "RFC9112-7.1", CHUNKED + b" 1\r\na\r\n0\r\n\r\n", 400),
    Case("chunk-size-not-hex", "RFC9112-7.1", CHUNKED + b"zz\r\na\r\n0\r\n\r\n", 400),
    Case("chunk-size-empty", "RFC9112-7.1", CHUNKED + b"\r\na\r\n0\r\n\r\n", 400),
    # 17 hex digits: more than 64 bits.
    Case(
        "chunk-size-overflow", "RFC9112-7.1", CHUNKED + b"10000000000000000\r\na\r\n0\r\n\r\n", 400
    ),
    Case("chunk-data-bad-terminator", "RFC9112-7.1", CHUNKED + b"1\r\naXX0\r\n\r\n", 400),
    Case("chunk-data-lf-terminator", "RFC9112-7.1", CHUNKED + b"1\r\na\n0\r\n\r\n", 400),
    Case("chunk-data-cr-terminator", "RFC9112-7.1", CHUNKED + b"1\r\na\r0\r\n\r\n", 400),
    Case("chunk-data-too-long", "RFC9112-7.1", CHUNKED + b"1\r\nabc\r\n0\r\n\r\n", 400),
    Case("chunk-size-lf-only", "RFC9112-7.1", CHUNKED + b"1\na\r\n0\r\n\r\n", 400),
    Case("last-chunk-lf-only", "RFC9112-7.1", CHUNKED + b"0\n\n", 400),
    # RFC 9112 7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    Case("chunk-ext-no-name", "RFC9112-7.1.1", CHUNKED + b"1;\r\na\r\n0\r\n\r\n", 400),
    Case("chunk-ext-ctl", "RFC9112-7.1.1", CHUNKED + b"1;a=\x01\r\na\r\n0\r\n\r\n", 400),
    # RFC 9112 7.1.1: a server ought to limit the total length of chunk extensions and answer
    # 4xx past it (Go's 16 KiB budget, http_validation.ChunkFraming).
    Case(
        "chunk-ext-over-cap",
        "RFC9112-7.1.1",
        CHUNKED + b"1;x=" + b"y" * 20_000 + b"\r\na\r\n0\r\n\r\n",
        400,
    ),
    # -- trailers: RFC 9110 6.5.1, nothing that frames or routes the message ----------------
    Case(
        "trailer-content-length",
        "RFC9110-6.5.1",
        CHUNKED + b"1\r\na\r\n0\r\nContent-Length: 5\r\n\r\n",
        400,
    ),
    Case(
        "trailer-transfer-encoding",
        "RFC9110-6.5.1",
        CHUNKED + b"1\r\na\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    Case(
        "trailer-connection",
        "RFC9110-6.5.1",
        CHUNKED + b"1\r\na\r\n0\r\nConnection: close\r\n\r\n",
        400,
    ),
    Case("trailer-host", "RFC9110-6.5.1", CHUNKED + b"1\r\na\r\n0\r\nHost: b\r\n\r\n", 400),
    Case("trailer-upgrade", "RFC9110-6.5.1", CHUNKED + b"1\r\na\r\n0\r\nUpgrade: h2c\r\n\r\n", 400),
    Case("trailer-obs-fold", "RFC9112-5.2", CHUNKED + b"1\r\na\r\n0\r\nX: a\r\n b\r\n\r\n", 400),
    Case("trailer-nul", "RFC9110-5.5", CHUNKED + b"1\r\na\r\n0\r\nX: a\x00\r\n\r\n", 400),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_refused_however_the_bytes_arrive(loop: asyncio.AbstractEventLoop, case: Case) -> None:
    app = BodyReader()
    ctx = make_context(loop, app)
    data = case.request + FOLLOW
    deliveries = 0
    for label, parts in pieces(data):
        client = deliver(loop, ctx, parts)
        assert_refused(client, app, case.status, f"{case.id}, {label}")
        deliveries += 1
    client.spin()
    assert ctx.stats_reader.bad_requests() == {case.status: deliveries}  # type: ignore[attr-defined]
    assert ctx.requests_in_flight == 0


# Variants the RFCs require us to accept: the same body must reach the app.
ACCEPTED = {
    # RFC 9110 5.5 / 5.6.3: optional whitespace around a field value is not part of it.
    "te-padded-RFC9110-5.6.3": POST + b"Transfer-Encoding:  chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-tab-RFC9110-5.6.3": POST + b"Transfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    # RFC 9112 7: transfer-coding names are case-insensitive.
    "te-uppercase-RFC9112-7": POST + b"Transfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    # RFC 9110 5.6.1: empty list elements are ignored.
    "te-empty-element-RFC9110-5.6.1": POST + b"Transfer-Encoding: , chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n",
    "cl-leading-zeros-RFC9110-8.6": POST + b"Content-Length: 0003\r\n\r\nabc",
    "cl-ows-RFC9110-5.5": POST + b"Content-Length:   3  \r\n\r\nabc",
    # RFC 9112 7.1.1: unknown extensions are ignored (this one within the budget).
    "chunk-ext-RFC9112-7.1.1": CHUNKED + b'3;name=value;q="quoted string"\r\nabc\r\n0\r\n\r\n',
    "chunk-ext-just-under-budget-RFC9112-7.1.1": CHUNKED
    + b"3;x="
    + b"y" * 12_000
    + b"\r\nabc\r\n0\r\n\r\n",
    # RFC 9112 7.1.2: trailer fields the message does not depend on are allowed (and dropped).
    "trailer-RFC9112-7.1.2": CHUNKED + b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n",
    # RFC 9112 2.2: at least one empty line before the request line SHOULD be ignored.
    "leading-empty-lines-RFC9112-2.2": b"\r\n\r\n" + POST + b"Content-Length: 3\r\n\r\nabc",
    # RFC 9112 3.2: an HTTP/1.0 request may leave Host out.
    "http10-no-host-RFC9112-3.2": b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
    "host-ipv6-port-RFC9112-3.2": b"POST / HTTP/1.1\r\nHost: [::1]:8000\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    "host-empty-RFC9112-3.2": b"POST / HTTP/1.1\r\nHost:\r\nContent-Length: 3\r\n\r\nabc",
}


@pytest.mark.parametrize("request_bytes", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_accepted_however_the_bytes_arrive(
    loop: asyncio.AbstractEventLoop, request_bytes: bytes
) -> None:
    app = BodyReader()
    ctx = make_context(loop, app)
    for label, parts in pieces(request_bytes):
        app.completed.clear()
        app.bodies.clear()
        client = deliver(loop, ctx, parts)
        response = client.read_response()
        assert response.status == 200, label
        assert app.completed == ["/"], label
        assert app.bodies == [b"abc"], label
        client.close()
    assert ctx.stats_reader.bad_requests() == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "first",
    [
        b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /1 HTTP/1.0\r\n\r\n",  # RFC 9112 9.3: HTTP/1.0 without keep-alive closes
        b"POST /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
    ],
    ids=["connection-close", "http10", "connection-close-with-body"],
)
def test_nothing_after_a_closing_request_is_processed(
    loop: asyncio.AbstractEventLoop, first: bytes
) -> None:
    # RFC 9112 9.6: a server that sees "close" MUST NOT process further requests.
    app = BodyReader()
    ctx = make_context(loop, app)
    for label, parts in pieces(first + FOLLOW + b"GARBAGE\r\n\r\n"):
        app.calls.clear()
        client = deliver(loop, ctx, parts)
        response = only_response(client)
        assert response.status == 200, label
        assert app.calls == ["/1"], label
    assert ctx.stats_reader.bad_requests() == {}  # type: ignore[attr-defined]


def test_a_refused_request_after_good_pipelined_ones(loop: asyncio.AbstractEventLoop) -> None:
    # The requests before the hostile one are answered, in order; nothing after it is.
    app = BodyReader()
    ctx = make_context(loop, app)
    data = (
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
        + POST
        + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + FOLLOW
    )
    for label, parts in pieces(data):
        app.calls.clear()
        client = deliver(loop, ctx, parts)
        client.wait_closed()
        responses = parse_responses(client.output, eof=True)
        assert [(r.status, r.body) for r in responses] == [
            (200, b"/1"),
            (200, b"/2"),
            (400, b"Bad Request"),
        ], label
        assert app.calls == ["/1", "/2"], label
