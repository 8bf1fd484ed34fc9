"""How much of what we wrote the client has not taken yet: the measure of --timeout-write.

A transport pauses the app (``pause_writing``) once its own buffer is over the high-water
mark, and by then the kernel's send queue is full too. When the client reads, the kernel's
queue drains first, and the loop is woken to move more of its buffer only once a good share
of the queue is free (a third or half, depending on the kernel). A client reading slowly would
then look stalled from the transport's buffer alone, so the kernel's unsent byte count
(``TIOCOUTQ``, Linux and the BSDs) is added when there is a socket to ask.
"""

from __future__ import annotations

import asyncio
import struct

try:
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # no such ioctl here: the transport's buffer alone
    _OUTQ = None


def unsent_bytes(transport: asyncio.WriteTransport) -> int:
    """Bytes written to ``transport`` that the peer has not received yet, as far as we know."""
    size = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if _OUTQ is not None and sock is not None:
        try:
            queued = fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0")
        except (OSError, ValueError):
            return size  # closed meanwhile, or not a socket the ioctl knows
        size += struct.unpack("i", queued)[0]
    return size
