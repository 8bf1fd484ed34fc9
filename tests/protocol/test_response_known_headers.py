"""ResponseWriter with a shard's KnownHeaders: the short paths give the bytes the long one does.

A shard remembers header names it has validated and the last header list that passed; these
tests check that remembering never lets through what checking would refuse, and never reuses
a block where the status or the values call for a different one.
"""

from __future__ import annotations

from typing import Any

import pytest

from shardcorn.protocol.response import AppProtocolError, KnownHeaders, ResponseWriter

DEFAULTS = b"server: test\r\n"


def respond(
    known: KnownHeaders | None, headers: Any, status: int = 200, body: bytes = b"hi"
) -> bytes:
    writer = ResponseWriter()
    writer.start(
        status, headers, DEFAULTS, head_request=False, keep_alive=True, http11=True, known=known
    )
    return writer.body(body, more_body=False)


HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]


def test_remembered_headers_give_the_same_bytes() -> None:
    known = KnownHeaders()
    expected = respond(None, HEADERS)
    assert respond(known, HEADERS) == expected  # learns the names
    assert respond(known, HEADERS) == expected  # names known: the loop, then remembered
    assert known.last == HEADERS
    assert respond(known, list(HEADERS)) == expected  # an equal list: the remembered block
    assert respond(known, tuple(HEADERS)) == expected
    assert respond(known, iter(HEADERS)) == expected


def test_a_status_without_length_does_not_reuse_a_block_with_one() -> None:
    known = KnownHeaders()
    respond(known, HEADERS)
    respond(known, HEADERS)
    out = respond(known, [(b"content-type", b"text/plain"), (b"content-length", b"0")], 204, b"")
    assert b"content-length" not in out.lower()
    out = respond(known, HEADERS, 204, b"")
    assert b"content-length" not in out.lower()
    assert respond(known, HEADERS).endswith(b"content-length: 2\r\n\r\nhi")


@pytest.mark.parametrize(
    "value", [b"a\r\nSet-Cookie: evil=1", b"a\nb", b"a\rb", b"a\x00b", "text", 3]
)
def test_a_bad_value_under_a_known_name_is_still_refused(value: Any) -> None:
    known = KnownHeaders()
    respond(known, HEADERS)
    respond(known, HEADERS)
    with pytest.raises(AppProtocolError):
        respond(known, [(b"content-type", value), (b"content-length", b"2")])


@pytest.mark.parametrize("length", [b"+2", b" 2", b"2_0", b"x"])
def test_a_bad_length_under_a_known_name_is_still_refused(length: bytes) -> None:
    known = KnownHeaders()
    respond(known, HEADERS)
    with pytest.raises(AppProtocolError, match="content-length"):
        respond(known, [(b"content-type", b"text/plain"), (b"content-length", length)])


def test_conflicting_known_lengths_are_refused() -> None:
    known = KnownHeaders()
    respond(known, HEADERS)
    with pytest.raises(AppProtocolError, match="conflicting"):
        respond(known, [*HEADERS, (b"content-length", b"3")])


def test_a_mutable_value_is_never_remembered() -> None:
    known = KnownHeaders()
    value = bytearray(b"text/plain")
    headers: list[Any] = [(b"content-type", value), (b"content-length", b"2")]
    respond(known, headers)
    respond(known, headers)
    assert known.last is None
    value[:] = b"text/html!"
    assert b"content-type: text/html!\r\n" in respond(known, headers)


def test_names_that_change_the_framing_always_take_the_long_path() -> None:
    known = KnownHeaders()
    for _ in range(2):
        out = respond(known, [(b"connection", b"close"), (b"content-length", b"2")])
        assert out.count(b"connection") == 1
        out = respond(known, [(b"server", b"mine"), (b"content-length", b"2")])
        assert b"server: test" not in out and b"server: mine" in out
        out = respond(known, [(b"transfer-encoding", b"chunked"), (b"content-length", b"2")])
        assert b"transfer-encoding" not in out
    assert set(known.names) == {b"content-length"}
