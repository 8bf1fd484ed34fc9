"""Logging: the two loggers (``shardcorn.error``, ``shardcorn.access``), levels and colours.

The access log is the familiar ``client - "GET /path HTTP/1.1" 200`` line. Every field that
came from the network is escaped, so a client cannot forge log lines or send terminal codes.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
import traceback
from typing import Any

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

error_log = logging.getLogger("shardcorn.error")
access_log = logging.getLogger("shardcorn.access")

# Control characters (C0, DEL, C1) become \xNN; a backslash is doubled so escapes are unambiguous,
# and a double quote is escaped so a request target cannot end the quoted request field early.
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x22, *range(0x7F, 0xA0)]}
_ESCAPES[ord("\\")] = "\\\\"


def level_number(name: str) -> int:
    return LEVELS[name]


def escape(text: str) -> str:
    """Make a network-supplied string safe to put in a log line."""
    return text.translate(_ESCAPES)


def escape_bytes(data: bytes) -> str:
    return escape(data.decode("latin-1"))


def log_request(scope: dict[str, Any], method: str, status: int) -> None:
    """The access log line of one HTTP request or WebSocket handshake.

    Every network-supplied field is escaped, the client address too: X-Forwarded-For may
    put any text in it, a double quote as well.
    """
    client = scope.get("client")
    path = scope["path"]  # already includes root_path
    query = scope["query_string"]
    target = f"{path}?{query.decode('latin-1')}" if query else path
    access_log.info(
        '%s - "%s %s HTTP/%s" %d',
        escape(f"{client[0]}:{client[1]}") if client else "-",
        escape(method),
        escape(target),
        scope["http_version"],
        status,
    )


# Every record of both loggers has its control characters escaped, whatever built it: an
# exception message from the app, a WebSocket close reason, an address from X-Forwarded-For.
# Only control characters (and the line and paragraph separators some viewers break lines on)
# change, so text escape() already made safe passes through as it is. A traceback keeps its
# line breaks; a line break inside a message or an argument does not.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROLS[0x2028] = "\\u2028"
_CONTROLS[0x2029] = "\\u2029"
_FRAME_CONTROLS = {c: text for c, text in _CONTROLS.items() if c != 0x0A}


def _clean(value: object) -> object:
    if isinstance(value, BaseException):
        value = str(value)
    if isinstance(value, str) and not value.isprintable():
        return value.translate(_CONTROLS)
    return value


class ControlCharacterFilter(logging.Filter):
    """Escapes control characters in a record's message, arguments and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        # isprintable() is a quick C scan: the common, clean record is not rebuilt.
        msg = record.msg
        if isinstance(msg, str) and not msg.isprintable():
            record.msg = msg.translate(_CONTROLS)
        args = record.args
        if isinstance(args, tuple) and args:
            for arg in args:
                if isinstance(arg, BaseException) or (
                    isinstance(arg, str) and not arg.isprintable()
                ):
                    record.args = tuple(_clean(a) for a in args)
                    break
        exc_info = record.exc_info
        if exc_info and exc_info[1] is not None and not record.exc_text:
            record.exc_text = _format_exception(exc_info[1])
        return True


def _format_exception(exc: BaseException) -> str:
    """A traceback as logging prints it, with the exception's own text on one line each.

    Frames (``  File ...`` and their source lines) come from our files and keep their line
    breaks; everything else is the exception's message, which may carry a client's bytes.
    """
    parts = []
    for chunk in traceback.TracebackException.from_exception(exc).format():
        if chunk.startswith("  File "):
            parts.append(chunk.translate(_FRAME_CONTROLS))
            continue
        core = chunk.strip("\n")
        start = chunk.index(core) if core else len(chunk)
        parts.append(chunk[:start] + core.translate(_CONTROLS) + chunk[start + len(core) :])
    return "".join(parts).rstrip("\n")


for _logger in (error_log, access_log):
    _logger.addFilter(ControlCharacterFilter())


_COLOURS = {
    TRACE: "\x1b[34m",
    logging.DEBUG: "\x1b[36m",
    logging.INFO: "\x1b[32m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[91m",
}


class LevelPrefixFormatter(logging.Formatter):
    """``INFO:     message`` like uvicorn, optionally with the level coloured."""

    def __init__(self, fmt: str | None = None, use_colors: bool = False) -> None:
        super().__init__(fmt or "%(levelprefix)s %(message)s")
        self.use_colors = use_colors

    def format(self, record: logging.LogRecord) -> str:
        name = record.levelname
        pad = " " * max(0, 8 - len(name))
        if self.use_colors:
            name = f"{_COLOURS.get(record.levelno, '')}{name}\x1b[0m"
        record.levelprefix = f"{name}:{pad}"
        return super().format(record)


def configure_logging(
    log_level: str = "info",
    use_colors: bool | None = None,
    access_log_enabled: bool = True,
    log_config: str | None = None,
) -> None:
    """Set up the shardcorn loggers (idempotent: the handlers are replaced, not added)."""
    if log_config:
        _load_log_config(log_config)
    else:
        colours = sys.stderr.isatty() if use_colors is None else use_colors
        for logger, stream in ((error_log, sys.stderr), (access_log, sys.stdout)):
            handler = logging.StreamHandler(stream)
            handler.setFormatter(LevelPrefixFormatter(use_colors=colours))
            logger.handlers[:] = [handler]
            logger.propagate = False
    level = LEVELS[log_level]
    error_log.setLevel(level)
    access_log.setLevel(level if access_log_enabled else logging.CRITICAL + 1)
    logging.getLogger("shardcorn").setLevel(level)


def _load_log_config(path: str) -> None:
    """Apply a .json/.yaml dictConfig or an .ini fileConfig; a broken one is one line."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"log config file not found: {path}")
    try:
        if path.endswith((".json", ".yaml", ".yml")):
            loaded = _read_dict_config(path)
            if not isinstance(loaded, dict):
                raise ValueError("expected a mapping (a logging dictConfig)")
            # Python's default would silence every logger the file does not name, the
            # server's own included; say so in the file to get that.
            loaded.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(loaded)
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except Exception as exc:  # any failure here is the file's; logging's stack would not help
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, KeyError):
            reason = f"missing section or key {exc}"
        raise ValueError(f"--log-config {path}: {reason}") from None


def _read_dict_config(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        if path.endswith(".json"):
            return json.load(fh)
        try:
            import yaml
        except ImportError:
            raise ValueError("YAML needs PyYAML: pip install 'shardcorn[standard]'") from None
        return yaml.safe_load(fh)
