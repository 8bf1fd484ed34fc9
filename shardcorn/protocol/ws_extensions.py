"""Message size limits for wsproto: a capped permessage-deflate and a plain size guard.

wsproto decodes frames as they arrive but keeps no limit on how large a message may grow, and
its permessage-deflate inflates whatever it is given: a few kilobytes of deflate can expand
to gigabytes. Both classes here plug into wsproto's extension hooks, which see every data
frame's payload as it is read, so a message is refused with close code 1009 while it is being
received, never after it has been buffered.

* :class:`CappedDeflate` is permessage-deflate (RFC 7692) whose inflater is told how many
  bytes the current message may still produce (zlib's ``max_length``), so one compressed
  chunk can never expand past ``--ws-max-size``. It also keeps the "is this message
  compressed" bit across control frames interleaved in a fragmented message, which wsproto's
  own class forgets after a ping.
* :class:`MessageSizeGuard` is a local-only "extension" (never offered or negotiated, it uses
  no RSV bit) placed after the deflate one: it counts every message's payload after
  decompression, and refuses an uncompressed frame from its header alone when its declared
  length cannot fit.

Both are per connection; wsproto calls them for inbound frames in list order.
"""

from __future__ import annotations

import zlib

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

_NO_RSV = RsvBits(False, False, False)
_RSV1 = RsvBits(True, False, False)
# RFC 7692 7.2.2: the sender removes this empty stored block from the end of each message;
# the receiver appends it back before inflating the message's last frame.
_DEFLATE_TAIL = b"\x00\x00\xff\xff"

Proto = FrameDecoder | FrameProtocol


class CappedDeflate(PerMessageDeflate):
    """permessage-deflate that never inflates a message beyond ``max_size`` bytes."""

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self.max_size = max_size
        self._frame_is_data = False  # the frame being read is TEXT/BINARY/CONTINUATION
        self._message_compressed = False  # RSV1 of the current message's first frame
        self._produced = 0  # bytes inflated so far for the current message

    def frame_inbound_header(
        self, proto: Proto, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol():
            # Control frames are never compressed (RFC 7692 6.1) and do not touch the state
            # of a fragmented message they interrupt.
            self._frame_is_data = False
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else _RSV1
        self._frame_is_data = True
        if opcode is Opcode.CONTINUATION:
            # Only a message's first frame carries RSV1 (RFC 7692 6.1).
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else _RSV1
        self._message_compressed = rsv.rsv1
        self._produced = 0
        if rsv.rsv1 and self._decompressor is None:
            bits = self.server_max_window_bits if proto.client else self.client_max_window_bits
            self._decompressor = zlib.decompressobj(-bits)
        return _RSV1

    def frame_inbound_payload_data(self, proto: Proto, data: bytes) -> bytes | CloseReason:
        if not self._frame_is_data or not self._message_compressed:
            return data
        return self._inflate(data)

    def frame_inbound_complete(self, proto: Proto, fin: bool) -> bytes | CloseReason | None:
        if not self._frame_is_data or not fin or not self._message_compressed:
            return None
        self._message_compressed = False
        tail = self._inflate(_DEFLATE_TAIL)
        if isinstance(tail, CloseReason):
            return tail
        no_takeover = (
            self.server_no_context_takeover if proto.client else self.client_no_context_takeover
        )
        decompressor = self._decompressor
        # A peer that ended its deflate stream (BFINAL) starts a new one with the next message.
        if no_takeover or (decompressor is not None and decompressor.eof):
            self._decompressor = None
        return tail

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        if decompressor is None:  # pragma: no cover - set by the message's first header
            return CloseReason.INTERNAL_ERROR
        budget = self.max_size - self._produced
        try:
            # One byte more than the budget: getting it back proves the message is too big,
            # and zlib stops there, leaving the rest of the input unread (unconsumed_tail).
            out = decompressor.decompress(data, budget + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._produced += len(out)
        if self._produced > self.max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return out


class MessageSizeGuard(Extension):
    """Refuse (1009) any message whose payload, after decompression, exceeds ``max_size``."""

    name = "shardcorn-message-size"  # local bookkeeping only: never offered to a peer

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._size = 0
        self._frame_is_data = False
        self._message_compressed = False

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool | str:
        return False

    def frame_inbound_header(
        self, proto: Proto, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol():
            self._frame_is_data = False
            return _NO_RSV
        self._frame_is_data = True
        if opcode is not Opcode.CONTINUATION:
            self._size = 0
            self._message_compressed = rsv.rsv1
        # An uncompressed frame says how big it is: refuse it before reading a byte of it.
        if not self._message_compressed and self._size + payload_length > self.max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return _NO_RSV

    def frame_inbound_payload_data(self, proto: Proto, data: bytes) -> bytes | CloseReason:
        if self._frame_is_data:
            self._size += len(data)
            if self._size > self.max_size:
                return CloseReason.MESSAGE_TOO_BIG
        return data

    def frame_inbound_complete(self, proto: Proto, fin: bool) -> bytes | CloseReason | None:
        if self._frame_is_data and fin:
            self._size = 0
        return None
