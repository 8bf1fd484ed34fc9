"""Request-framing checks llhttp does not make. Sans-IO; each raises :class:`ProtocolError`.

llhttp (under httptools, in its default strict mode) already refuses most smuggling shapes:
Content-Length with Transfer-Encoding, duplicate or non-decimal Content-Length, ``chunked``
applied twice or not last, obs-fold, bare CR or LF, control bytes in names and values,
whitespace before the colon, malformed chunk sizes and terminators, and Content-Length or
Transfer-Encoding in trailers. What it lets through, and this module refuses:

* a Content-Length too large for a signed 64-bit integer (llhttp stops only at 2**64);
* an invalid Host value (llhttp accepts any field value there);
* trailer fields that would change how the connection is framed or routed (llhttp applies a
  ``Connection: close`` trailer to the *next* request);
* unbounded chunk extensions (llhttp skips them without limit, so a client could stream
  bytes forever that neither the app nor --limit-request-body ever sees).

Everything here runs only for rare headers or only while a chunked body is in progress,
except the Host check: one ``bytes.translate`` per request.
"""

from __future__ import annotations

from shardcorn.protocol.errors import ProtocolError

# RFC 9110 8.6: a recipient "MUST anticipate potentially large decimal numerals and prevent
# parsing errors due to integer conversion overflows". nginx refuses what does not fit off_t.
MAX_CONTENT_LENGTH = 2**63 - 1

# RFC 9112 3.2: a Host field value is uri-host [":" port]; uri-host is an IP-literal in
# brackets, an IPv4 address or a reg-name (unreserved / pct-encoded / sub-delims), RFC 3986
# 3.2.2. Any other byte makes the value invalid, which RFC 9112 3.2 says is a 400.
_HOST_BYTES = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:[]"

# Trailer fields the connection itself would act on (RFC 9110 6.5.1: a trailer must not carry
# what is needed to frame, route or manage the message). ASGI has no request trailers, so
# the app never sees the others; these are refused because llhttp or a proxy might act on them.
REFRAMING_TRAILERS = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"upgrade",
        b"host",
        b"te",
        b"trailer",
    }
)

# Chunk framing budget, Go's net/http rule (the fix for CVE-2023-39326): each chunk earns 16
# bytes of framing plus twice its data size (so a stream of one-byte chunks stays legal), and
# the framing beyond what has been earned may never exceed 16 KiB. RFC 9112 7.1.1 asks a
# server to "limit the total length of chunk extensions received in a request" and to answer
# 4xx past it. Trailer lines count as framing with no allowance.
CHUNK_FRAMING_PER_CHUNK = 16
CHUNK_FRAMING_EXCESS = 16 * 1024
_HEX = b"0123456789abcdefABCDEF"


def check_content_length(value: bytes) -> None:
    """Refuse a (llhttp-validated, all-digit) Content-Length that overflows an int64."""
    if int(value) > MAX_CONTENT_LENGTH:
        raise ProtocolError(400, "Content-Length too large")


def host_is_valid(value: bytes) -> bool:
    # translate(None, allowed) deletes every allowed byte: anything left is not allowed.
    return not value.translate(None, _HOST_BYTES)


def check_trailer(name: bytes) -> None:
    """Refuse a trailer field (``name`` lower-cased) that tries to re-frame the message."""
    if name in REFRAMING_TRAILERS:
        raise ProtocolError(400, f"{name.decode('latin-1')} is not allowed in a trailer")


class ChunkFraming:
    """Measures the framing of one chunked body: size lines, extensions, CRLFs, trailers.

    httptools reports chunks but not where they are, so this follows the chunked syntax over
    the same bytes (``find`` for line ends, data skipped by length, never scanned). It starts
    where the body starts: in the read the head ended in, the head either began that read
    (``head_tail=b""``) or began in earlier reads whose last bytes are ``head_tail`` (a CRLF
    CRLF split across reads is still found). llhttp validates the syntax; whatever it would
    refuse, this stops following (``lost``) and leaves the refusal to llhttp.

    When the head's offset cannot be known (an earlier request ended in the same read) or the
    syntax was lost, it falls back to counting per read: the bytes of each later read that
    are not data, against the same budget; the first read then goes unmeasured, bounded by
    the transport's read size.
    """

    __slots__ = (
        "body_mark",
        "chunks_mark",
        "counting",
        "cycle",
        "digits",
        "done",
        "excess",
        "fresh",
        "head_tail",
        "line",
        "lost",
        "number",
        "remaining",
        "started",
        "trailers",
    )

    def __init__(self, cycle: object, number: int, head_tail: bytes | None) -> None:
        self.cycle = cycle  # the request this body belongs to
        self.number = number  # its place on the connection (consecutive bodies chain)
        self.head_tail = head_tail
        self.started = False  # positioned after its head (tracking) or counting
        self.counting = False
        self.lost = False
        self.done = False  # the end of the body has been seen
        self.excess = 0
        self.line = 0  # bytes of the current line so far
        self.digits = b""  # the first bytes of the current size line
        self.remaining = 0  # chunk data (and its CRLF) still to skip
        self.trailers = False
        self.body_mark = 0
        self.chunks_mark = 0
        self.fresh = False  # counting starts with the next read

    # -- tracking ----------------------------------------------------------------------------
    def start(self, data: bytes, after: int = -1) -> int:
        """Find the body in the read the head ended in (``after``: where the previous,
        consecutive chunked body ended in it). The offset, or -1 (then: counting)."""
        self.started = True
        if after >= 0:
            offset = _head_end(data[after:], b"")
            offset = offset if offset < 0 else offset + after
        else:
            offset = _head_end(data, self.head_tail)
        if offset < 0:
            self.counting = True
        return offset

    def scan(self, data: bytes, pos: int = 0) -> int:
        """Follow the framing in ``data[pos:]``. Returns -2 when over budget, else the offset
        just past the end of the body, or -1 if it goes on (or cannot be followed)."""
        size_of_data = len(data)
        while pos < size_of_data and not self.lost:
            if self.remaining:
                skip = min(self.remaining, size_of_data - pos)
                self.remaining -= skip
                pos += skip
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                if not self.trailers and len(self.digits) < 20:
                    self.digits += data[pos : pos + 20]
                self.line += size_of_data - pos
                return -2 if self.excess + self.line > CHUNK_FRAMING_EXCESS else -1
            line = self.line + end + 1 - pos
            if self.trailers:
                if line <= 2:  # the empty line: the end of the body
                    self.done = True
                    return end + 1
                self.excess += line
            else:
                size = _chunk_size(self.digits + data[pos : min(end, pos + 20)])
                if size < 0:
                    self.lost = True  # llhttp refuses this line; nothing more to follow
                    break
                # Go counts the line without its CRLF plus the CRLF after the data: that is
                # ``line``. The chunk earns 16 plus twice its size.
                self.excess = max(0, self.excess + line - CHUNK_FRAMING_PER_CHUNK - 2 * size)
                if size:
                    self.remaining = size + 2
                else:
                    self.trailers = True
            if self.excess > CHUNK_FRAMING_EXCESS:
                return -2
            self.line = 0
            self.digits = b""
            pos = end + 1
        if self.lost:
            self.counting = True
        return -1

    # -- counting (the fallback) -------------------------------------------------------------
    def mark(self, body_size: int, chunks: int) -> None:
        """Start counting: the read being handled now is not counted (it was scanned, or
        holds the head)."""
        self.body_mark = body_size
        self.chunks_mark = chunks
        self.fresh = True

    def count(self, data: bytes, body_size: int, chunks: int) -> bool:
        """Account one later read by its totals; True when over budget."""
        body = body_size - self.body_mark
        new_chunks = chunks - self.chunks_mark
        self.body_mark = body_size
        self.chunks_mark = chunks
        if self.fresh:
            self.fresh = False
            return False
        allowance = CHUNK_FRAMING_PER_CHUNK * new_chunks + 2 * body
        self.excess = max(0, self.excess + len(data) - body - allowance)
        return self.excess > CHUNK_FRAMING_EXCESS


def _chunk_size(line: bytes) -> int:
    """The size on a chunk-size line's first bytes; -1 if llhttp would refuse it."""
    digits = line.split(b";", 1)[0].rstrip(b"\r")
    if not digits or len(digits) > 16 or digits.translate(None, _HEX):
        return -1
    return int(digits, 16)


def _head_end(data: bytes, tail: bytes | None) -> int:
    """Offset in ``data`` just past the head's final CRLF CRLF; -1 when it cannot be known.

    A head holds no CRLF CRLF before its end (llhttp refuses bare CR and LF in it), so the
    first one is the end; empty lines before the request line are skipped first.
    """
    if tail is None:
        return -1
    if tail:
        found = (tail + data).find(b"\r\n\r\n")
        return -1 if found < 0 else found + 4 - len(tail)
    start = len(data) - len(data.lstrip(b"\r\n"))
    found = data.find(b"\r\n\r\n", start)
    return -1 if found < 0 else found + 4
