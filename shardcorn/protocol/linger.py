"""Lingering close: after an error response, read and drop what the client still sends.

A client refused early (413 for a declared body, 400 in the middle of a chunked body) is often
still sending. Closing a TCP socket whose receive queue holds unread bytes makes Linux send a
reset instead of a FIN, and a client blocked in ``send()`` then sees ECONNRESET and never
reads the answer that is already on its way. So, like nginx's ``lingering_close``, we shut
down our sending side (the client sees the response, then end of stream), keep reading for a
bounded time and number of bytes, throw every byte away, and close once the client does.

Nothing read while lingering is parsed: the stand-in parser only counts.
"""

from __future__ import annotations

import asyncio

# nginx waits up to 30 s (lingering_time); a client that has the response and the FIN needs
# far less to stop sending and close. Past either bound the socket is closed regardless.
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024


class Lingering:
    """Takes the parser's place on a connection that is lingering: counts, never parses."""

    __slots__ = ("received", "timer", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.received = 0
        self.timer = loop.call_later(LINGER_SECONDS, self.give_up)

    def feed_data(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > LINGER_BYTES:
            self.give_up()

    def give_up(self) -> None:
        self.timer.cancel()
        if not self.transport.is_closing():
            self.transport.close()

    def cancel(self) -> None:
        self.timer.cancel()


def start_lingering(
    transport: asyncio.Transport, loop: asyncio.AbstractEventLoop
) -> Lingering | None:
    """Half-close ``transport`` and keep reading; None if it cannot half-close (TLS)."""
    if transport.is_closing() or not transport.can_write_eof():
        return None
    try:
        transport.write_eof()  # a FIN after the response already written
    except (OSError, RuntimeError, NotImplementedError):
        return None
    transport.resume_reading()
    return Lingering(transport, loop)
