"""Logs: control characters from the network (or from an app repeating it) are escaped in every
field of the access and error logs, so a client can neither forge log lines nor send terminal
escape sequences to whoever reads the log."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

from shardcorn.logs import ControlCharacterFilter, access_log, error_log
from tests.protocol.memory import connect

Message = dict[str, Any]
# C0 controls but the line feed, DEL, C1 controls, and the Unicode line/paragraph separators.
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
HOSTILE = "evil\n\x1b[31mINFO:     forged\x07\u2028\x9b"


def assert_clean(logs: pytest.LogCaptureFixture) -> str:
    text = logs.text
    assert not CONTROL.search(text), repr(text)
    assert "\nINFO:     forged" not in text
    return text


async def ok(scope: Message, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_forwarded_client_address_is_escaped_in_the_access_log(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    # X-Forwarded-For from a trusted proxy (127.0.0.1 by default) becomes the client address;
    # a field value may carry tabs and obs-text (\x9b is a C1 control once decoded).
    client = connect(loop, ok)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\t\x9b[2J\r\n\r\n")
    assert client.read_response().status == 200
    client.close()
    text = assert_clean(logs)
    assert "1.2.3.4\\x09\\x9b[2J" in text


def test_a_quote_in_a_forwarded_client_address_cannot_open_a_field(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    """A log parser splits an access line on its double quotes: an X-Forwarded-For value with
    one must not shift the request line and the status into other fields."""
    client = connect(loop, ok)
    client.send(b'GET /real HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4" "GET /fake\r\n\r\n')
    assert client.read_response().status == 200
    client.close()
    [line] = [r.getMessage() for r in logs.records if r.name == access_log.name]
    assert line.count('"') == 2, line
    assert line.endswith('"GET /real HTTP/1.1" 200')
    assert "1.2.3.4\\x22 \\x22GET /fake" in line


def test_request_target_is_escaped_in_the_access_log(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    client = connect(loop, ok)
    # Percent-decoded into the path: LF, ESC, LINE SEPARATOR, NEL (a C1 line break).
    client.send(b"GET /a%0A%1B%5B31m%E2%80%A8%C2%85 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.read_response().status == 200
    client.close()
    text = assert_clean(logs)
    assert "/a\\x0a\\x1b[31m\\u2028\\x85" in text


def test_an_app_exception_repeating_client_input_is_one_escaped_record(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        raise ValueError("bad header: " + HOSTILE)

    client = connect(loop, app)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.read_response().status == 500
    client.close()
    text = assert_clean(logs)
    assert "ValueError: bad header: evil\\x0a\\x1b[31mINFO:     forged\\x07\\u2028\\x9b" in text
    assert "Traceback (most recent call last):\n" in text  # frames keep their line breaks


def test_the_filter_escapes_arguments_messages_and_exceptions() -> None:
    record = logging.LogRecord(
        "shardcorn.error", logging.ERROR, __file__, 1, "peer %s said %r: %s", None, None
    )
    record.args = (HOSTILE, "q\x07", OSError("reset\r\nby peer"))
    assert ControlCharacterFilter().filter(record)
    message = record.getMessage()
    assert not CONTROL.search(message), repr(message)
    assert message.startswith("peer evil\\x0a\\x1b[31mINFO:")
    assert "reset\\x0d\\x0aby peer" in message


def test_clean_records_pass_unchanged() -> None:
    args = ("127.0.0.1:5000", "GET", "/caf\u00e9", "1.1", 200)
    record = logging.LogRecord("shardcorn.access", logging.INFO, __file__, 1, "%s", args, None)
    assert ControlCharacterFilter().filter(record)
    assert record.args is args  # nothing rebuilt on the hot path


def test_both_loggers_carry_the_filter() -> None:
    for logger in (access_log, error_log):
        assert any(isinstance(f, ControlCharacterFilter) for f in logger.filters)
