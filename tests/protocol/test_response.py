"""ResponseWriter, sans-IO: ASGI response messages in, the exact bytes to write out."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import pytest

from shardcorn.protocol.errors import error_response
from shardcorn.protocol.response import AppProtocolError, ResponseWriter, status_line

DEFAULTS = b"server: test\r\n"


def writer_for(
    status: Any = 200,
    headers: Iterable[Any] = (),
    *,
    head_request: bool = False,
    keep_alive: bool = True,
    http11: bool = True,
    defaults: bytes = DEFAULTS,
) -> ResponseWriter:
    writer = ResponseWriter()
    writer.start(
        status, headers, defaults, head_request=head_request, keep_alive=keep_alive, http11=http11
    )
    return writer


def test_single_body_gets_a_content_length_in_one_buffer() -> None:
    writer = writer_for(200, [(b"content-type", b"text/plain")])
    assert not writer.head_sent
    out = writer.body(b"hello", more_body=False)
    assert out == (
        b"HTTP/1.1 200 OK\r\nserver: test\r\ncontent-type: text/plain\r\n"
        b"content-length: 5\r\n\r\nhello"
    )
    assert writer.head_sent and writer.finished and writer.keep_alive
    assert writer.bytes_sent == 5


def test_streaming_without_length_is_chunked() -> None:
    writer = writer_for()
    first = writer.body(b"abc", more_body=True)
    assert first == (
        b"HTTP/1.1 200 OK\r\nserver: test\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    assert writer.body(b"", more_body=True) == b""  # an empty chunk would end the body
    assert writer.body(b"0123456789abcdef", more_body=True) == b"10\r\n0123456789abcdef\r\n"
    assert writer.body(b"", more_body=False) == b"0\r\n\r\n"
    assert writer.finished and writer.bytes_sent == 19


def test_chunked_last_message_with_data() -> None:
    writer = writer_for()
    writer.body(b"a", more_body=True)
    assert writer.body(b"bc", more_body=False) == b"2\r\nbc\r\n0\r\n\r\n"


def test_http10_streaming_without_length_ends_by_closing() -> None:
    writer = writer_for(http11=False)
    out = writer.body(b"abc", more_body=True)
    assert out == b"HTTP/1.1 200 OK\r\nserver: test\r\nconnection: close\r\n\r\nabc"
    assert not writer.keep_alive
    assert writer.body(b"def", more_body=False) == b"def"
    assert writer.finished


def test_http10_keep_alive_says_so() -> None:
    writer = writer_for(http11=False, keep_alive=True)
    out = writer.body(b"x", more_body=False)
    assert b"connection: keep-alive\r\n" in out and b"content-length: 1\r\n" in out
    assert writer.keep_alive


def test_content_length_honoured_across_messages() -> None:
    writer = writer_for(200, [(b"Content-Length", b"6")])
    assert writer.body(b"abc", more_body=True).endswith(b"Content-Length: 6\r\n\r\nabc")
    assert writer.body(b"def", more_body=False) == b"def"
    assert writer.finished


def test_body_longer_than_content_length_on_first_message_sends_nothing() -> None:
    writer = writer_for(200, [(b"content-length", b"2")])
    with pytest.raises(AppProtocolError, match="longer"):
        writer.body(b"abc", more_body=False)
    assert not writer.head_sent  # the caller can still answer 500


def test_body_shorter_than_content_length_on_first_message_sends_nothing() -> None:
    writer = writer_for(200, [(b"content-length", b"5")])
    with pytest.raises(AppProtocolError, match="shorter"):
        writer.body(b"abc", more_body=False)
    assert not writer.head_sent


def test_body_longer_than_content_length_later() -> None:
    writer = writer_for(200, [(b"content-length", b"4")])
    writer.body(b"abc", more_body=True)
    with pytest.raises(AppProtocolError, match="longer"):
        writer.body(b"de", more_body=True)
    assert writer.head_sent


def test_body_shorter_than_content_length_later() -> None:
    writer = writer_for(200, [(b"content-length", b"4")])
    writer.body(b"abc", more_body=True)
    with pytest.raises(AppProtocolError, match="shorter"):
        writer.body(b"", more_body=False)


def test_body_after_finish_is_an_error() -> None:
    writer = writer_for()
    writer.body(b"x", more_body=False)
    with pytest.raises(AppProtocolError, match="complete"):
        writer.body(b"y", more_body=False)


@pytest.mark.parametrize("value", [b"abc", b"-1", b"+1", b" 1", b"1_0", b"1.0", b""])
def test_invalid_content_length(value: bytes) -> None:
    with pytest.raises(AppProtocolError):
        writer_for(200, [(b"content-length", value)])


def test_conflicting_content_lengths() -> None:
    with pytest.raises(AppProtocolError, match="conflicting"):
        writer_for(200, [(b"content-length", b"1"), (b"content-length", b"2")])
    writer = writer_for(200, [(b"content-length", b"1"), (b"content-length", b"1")])
    assert writer.body(b"x", more_body=False).endswith(b"\r\n\r\nx")


def test_head_keeps_the_apps_content_length_and_sends_no_body() -> None:
    writer = writer_for(200, [(b"content-length", b"1000")], head_request=True)
    out = writer.body(b"", more_body=False)
    assert out == b"HTTP/1.1 200 OK\r\nserver: test\r\ncontent-length: 1000\r\n\r\n"
    assert writer.finished


def test_head_with_a_body_given_drops_it_and_reports_its_length() -> None:
    writer = writer_for(200, head_request=True)
    out = writer.body(b"hello", more_body=False)
    assert out == b"HTTP/1.1 200 OK\r\nserver: test\r\ncontent-length: 5\r\n\r\n"


def test_head_streamed_sends_head_once_and_nothing_else() -> None:
    writer = writer_for(200, head_request=True)
    assert writer.body(b"a", more_body=True) == b"HTTP/1.1 200 OK\r\nserver: test\r\n\r\n"
    assert writer.body(b"b", more_body=True) == b""
    assert writer.body(b"c", more_body=False) == b""
    assert writer.finished


@pytest.mark.parametrize("status", [204, 304, 100, 103])
def test_no_body_statuses(status: int) -> None:
    writer = writer_for(status)
    out = writer.body(b"ignored", more_body=False)
    assert out == status_line(status) + DEFAULTS + b"\r\n"


def test_204_drops_a_content_length_but_304_keeps_it() -> None:
    out = writer_for(204, [(b"content-length", b"0")]).body(b"", more_body=False)
    assert b"content-length" not in out.lower()
    out = writer_for(304, [(b"content-length", b"10")]).body(b"", more_body=False)
    assert b"content-length: 10\r\n" in out


def test_app_transfer_encoding_is_dropped() -> None:
    writer = writer_for(200, [(b"transfer-encoding", b"chunked")])
    out = writer.body(b"abc", more_body=False)
    assert out.count(b"transfer-encoding") == 0 and b"content-length: 3\r\n" in out


def test_http_status_enum_is_accepted() -> None:
    out = writer_for(HTTPStatus.NOT_FOUND).body(b"", more_body=False)
    assert out.startswith(b"HTTP/1.1 404 Not Found\r\n")


@pytest.mark.parametrize("status", ["200", 200.0, True, None, 99, 600, 1000, -1])
def test_bad_status(status: Any) -> None:
    with pytest.raises(AppProtocolError):
        writer_for(status)


def test_unknown_status_has_an_empty_reason() -> None:
    assert writer_for(599).body(b"", more_body=False).startswith(b"HTTP/1.1 599 \r\n")


@pytest.mark.parametrize(
    "name",
    [b"", b"bad name", b"bad:name", b"x\r\ny", b"x\ny", b"caf\xe9", b"a(b)", b'a"b', b"a\x00"],
)
def test_bad_header_names_are_refused(name: bytes) -> None:
    with pytest.raises(AppProtocolError, match="name"):
        writer_for(200, [(name, b"v")])


@pytest.mark.parametrize(
    "value",
    [b"a\r\nSet-Cookie: evil=1", b"a\nb", b"a\rb", b"a\x00b", b"\r\n\r\nHTTP/1.1 200 OK"],
)
def test_header_values_that_could_split_the_response_are_refused(value: bytes) -> None:
    with pytest.raises(AppProtocolError, match="value"):
        writer_for(200, [(b"x-test", value)])


def test_header_values_with_tabs_and_latin1_are_fine() -> None:
    out = writer_for(200, [(b"x-a", b"a\tb"), (b"x-b", b"caf\xe9")]).body(b"", more_body=False)
    assert b"x-a: a\tb\r\nx-b: caf\xe9\r\n" in out


@pytest.mark.parametrize(
    "headers", [[(b"a",)], [b"ab"], [("str", "str")], [(b"a", "str")], [(1, 2)], [None]]
)
def test_malformed_header_items(headers: list[Any]) -> None:
    with pytest.raises(AppProtocolError):
        writer_for(200, headers)


def test_bytearray_headers_are_accepted() -> None:
    out = writer_for(200, [(bytearray(b"x-a"), bytearray(b"1"))]).body(b"", more_body=False)
    assert b"x-a: 1\r\n" in out


def test_app_server_and_date_replace_the_defaults() -> None:
    defaults = b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\nserver: shardcorn\r\nx-extra: 1\r\n"
    writer = writer_for(200, [(b"Server", b"mine")], defaults=defaults)
    out = writer.body(b"", more_body=False)
    assert b"server: shardcorn" not in out and b"Server: mine\r\n" in out
    assert b"date: Thu" in out and b"x-extra: 1\r\n" in out
    writer = writer_for(200, [(b"date", b"yesterday")], defaults=defaults)
    out = writer.body(b"", more_body=False)
    assert b"date: Thu" not in out and b"date: yesterday\r\n" in out
    assert b"server: shardcorn\r\n" in out


def test_connection_close_from_the_app() -> None:
    writer = writer_for(200, [(b"connection", b"close")])
    out = writer.body(b"", more_body=False)
    assert out.lower().count(b"connection:") == 1
    assert not writer.keep_alive


def test_connection_keep_alive_from_the_app_is_overridden_when_we_close() -> None:
    writer = writer_for(200, [(b"connection", b"keep-alive")], keep_alive=False)
    out = writer.body(b"", more_body=False)
    assert b"connection: close\r\n" in out
    assert not writer.keep_alive


def test_not_keep_alive_says_close() -> None:
    writer = writer_for(200, keep_alive=False)
    assert b"connection: close\r\n" in writer.body(b"x", more_body=False)


def test_error_response_is_complete_and_closes() -> None:
    out = error_response(400, DEFAULTS, "Bad Request")
    assert out == (
        b"HTTP/1.1 400 Bad Request\r\nserver: test\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 11\r\nconnection: close\r\n\r\nBad Request"
    )
