"""The access log line, its escaping, log levels (trace included) and colours."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from shardcorn.logs import TRACE, LevelPrefixFormatter, configure_logging, escape
from tests.protocol.memory import connect

Message = dict[str, Any]


async def ok(scope: Message, receive: Any, send: Any) -> None:
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"x"})


def access_lines(logs: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in logs.records if r.name == "shardcorn.access"]


def test_access_log_line(loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture) -> None:
    client = connect(loop, ok)
    client.send(b"GET /path?q=1&r=2 HTTP/1.1\r\nHost: a\r\n\r\n")
    client.read_response()
    client.send(b"POST /missing HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
    client.read_response()
    client.wait_closed()
    assert access_lines(logs) == [
        '127.0.0.1:50000 - "GET /path?q=1&r=2 HTTP/1.1" 200',
        '127.0.0.1:50000 - "POST /missing HTTP/1.0" 404',
    ]
    assert all(r.levelno == logging.INFO for r in logs.records if r.name == "shardcorn.access")


def test_access_log_includes_root_path(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    client = connect(loop, ok, root_path="/api")
    client.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    client.read_response()
    client.close()
    assert access_lines(logs) == ['127.0.0.1:50000 - "GET /api/x HTTP/1.1" 200']


def test_access_log_escapes_control_characters(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    client = connect(loop, ok)
    # Percent-decoded into the path: a newline, an ANSI escape, a quote, a backslash.
    client.send(b"GET /a%0Afake%1B[31m%22q%5C?k=%0A HTTP/1.1\r\nHost: a\r\n\r\n")
    client.read_response()
    client.close()
    (line,) = access_lines(logs)
    assert line == '127.0.0.1:50000 - "GET /a\\x0afake\\x1b[31m\\x22q\\\\?k=%0A HTTP/1.1" 200'
    assert "\n" not in line and "\x1b" not in line


def test_escape_leaves_printable_text_alone() -> None:
    assert escape("/café/ünïcode?a=b") == "/café/ünïcode?a=b"
    assert escape("\x00\x7f\x9f") == "\\x00\\x7f\\x9f"


def test_access_log_for_an_app_failure_says_500(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    client = connect(loop, app)
    client.send(b"GET /f HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.read_response().status == 500
    client.wait_closed()
    assert access_lines(logs) == ['127.0.0.1:50000 - "GET /f HTTP/1.1" 500']


def test_no_access_log(loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture) -> None:
    client = connect(loop, ok, access_log=False)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.read_response()
    client.close()
    assert access_lines(logs) == []


def test_access_log_off_below_info(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    logging.getLogger("shardcorn.access").setLevel(logging.WARNING)
    client = connect(loop, ok)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.read_response()
    client.close()
    assert access_lines(logs) == []


def test_trace_logs_connections(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    logging.getLogger("shardcorn.error").setLevel(TRACE)
    client = connect(loop, ok)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    client.read_response()
    client.close()
    trace = [r.getMessage() for r in logs.records if r.levelno == TRACE]
    assert trace == [
        "127.0.0.1:50000 - HTTP connection made",
        "127.0.0.1:50000 - HTTP connection lost",
    ]
    assert logging.getLevelName(TRACE) == "TRACE"


def test_trace_logs_malformed_requests(
    loop: asyncio.AbstractEventLoop, logs: pytest.LogCaptureFixture
) -> None:
    logging.getLogger("shardcorn.error").setLevel(TRACE)
    client = connect(loop, ok)
    client.send(b"BAD\x01\r\n\r\n")
    client.read_response()
    client.wait_closed()
    assert "Invalid HTTP request" in logs.text


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    names = ("shardcorn", "shardcorn.error", "shardcorn.access")
    saved = {
        n: (
            logging.getLogger(n).level,
            list(logging.getLogger(n).handlers),
            logging.getLogger(n).propagate,
        )
        for n in names
    }
    yield
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


@pytest.mark.parametrize("level", ["critical", "error", "warning", "info", "debug", "trace"])
def test_log_levels(restore_loggers: None, level: str) -> None:
    configure_logging(level, use_colors=False)
    error = logging.getLogger("shardcorn.error")
    expected = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 5}
    assert error.getEffectiveLevel() == expected[level]
    assert logging.getLogger("shardcorn.access").isEnabledFor(logging.INFO) == (
        expected[level] <= logging.INFO
    )


def test_configure_logging_is_idempotent(restore_loggers: None) -> None:
    configure_logging("info")
    configure_logging("info")
    assert len(logging.getLogger("shardcorn.error").handlers) == 1
    assert len(logging.getLogger("shardcorn.access").handlers) == 1


def test_access_log_switch(restore_loggers: None) -> None:
    configure_logging("info", access_log_enabled=False)
    assert not logging.getLogger("shardcorn.access").isEnabledFor(logging.INFO)
    assert logging.getLogger("shardcorn.error").isEnabledFor(logging.INFO)


def _format(use_colors: bool, level: int) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LevelPrefixFormatter(use_colors=use_colors))
    record = logging.LogRecord("shardcorn.error", level, __file__, 1, "hello %s", ("x",), None)
    handler.emit(record)
    return stream.getvalue()


def test_use_colors() -> None:
    assert _format(False, logging.INFO) == "INFO:     hello x\n"
    assert _format(False, TRACE) == "TRACE:    hello x\n"
    coloured = _format(True, logging.WARNING)
    assert coloured == "\x1b[33mWARNING\x1b[0m:  hello x\n"
    assert "\x1b[" in _format(True, logging.ERROR)


def test_use_colors_follows_the_terminal_by_default(
    restore_loggers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for tty in (True, False):
        monkeypatch.setattr("sys.stderr.isatty", lambda tty=tty: tty)
        configure_logging("info", use_colors=None)
        formatter = logging.getLogger("shardcorn.error").handlers[0].formatter
        assert isinstance(formatter, LevelPrefixFormatter)
        assert formatter.use_colors is tty
