"""Responses the protocol layer sends on its own: malformed requests, limits, app failures.

Each is a complete response with ``connection: close``: after a protocol error the framing
of whatever follows on the connection cannot be trusted, so nothing after it is processed.
"""

from __future__ import annotations

from http import HTTPStatus

from shardcorn.protocol.response import STATUS_LINES


def error_response(status: int, default_headers: bytes, detail: str | None = None) -> bytes:
    phrase = HTTPStatus(status).phrase
    body = (detail or phrase).encode("utf-8", "replace")
    return b"".join(
        (
            STATUS_LINES[status],
            default_headers,
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        )
    )


class ProtocolError(Exception):
    """The peer sent something we refuse; ``status`` is what we answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
