"""HTTP/1.1 framing shared by the proxy's server and its upstream client: strict head parsing and a
body decoder (Content-Length, chunked transfer, or until the connection closes).

Strict on purpose: a proxy that reads a message differently from the server behind it can be made
to smuggle one request inside another, so anything ambiguous is refused, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from multidict import CIMultiDict

MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 64 * 1024
TOKEN_PATTERN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# One header line, from the CRLF that ends the line before to its own: a token name right before
# the colon (no space, no folding), and a value without CR, LF or NUL, its surrounding blanks left
# out. A line that does not match as a whole is not matched at all. Starting with the literal CRLF
# lets the search skip to line starts, and the value's characters are listed rather than negated:
# a set of ranges is one table lookup per character.
_VALUE_CHAR = r"[\x01-\x09\x0b\x0c\x0e-\xff]"  # not NUL, LF or CR
_VALUE_EDGE = r"[\x01-\x08\x0b\x0c\x0e-\x1f\x21-\xff]"  # nor a blank
_FIELD = re.compile(rf"\r\n({TOKEN_PATTERN}):[ \t]*((?:{_VALUE_CHAR}*{_VALUE_EDGE})?)[ \t]*(?=\r\n)")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")

# Decoder states.
_LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(7)


class BadMessage(ValueError):
    """Bytes that are not a valid HTTP/1.1 message."""


def parse_head(head: bytes) -> tuple[str, CIMultiDict[str]]:
    """The start line and the header fields of a head (without its final empty line).

    The start line is the caller's to check against its own grammar, which has no room for CR, LF
    or NUL."""
    # Latin-1 maps each byte to one character, so relayed headers keep their bytes.
    text = head.decode("latin-1") + "\r\n"
    start_end = text.find("\r\n")
    found = _FIELD.findall(text, start_end)
    # Every line between two CRLFs matched, so none holds a stray CR, LF or NUL, and none could be
    # read two ways.
    if len(found) != text.count("\r\n") - 1:
        raise BadMessage("invalid header line")
    return text[:start_end], CIMultiDict(found)


def field_lines(headers: CIMultiDict[str]) -> str:
    """The header fields as head lines, CRLF-separated (none after the last)."""
    return "\r\n".join(map(": ".join, headers.items()))


def encode_head(text: str) -> bytes:
    """A head for the wire: heads are decoded as Latin-1, so this gives their bytes back; text of
    the proxy's own beyond Latin-1 (a key or target name from the config) goes as UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


def content_length(headers: CIMultiDict[str]) -> int | None:
    """The declared body length; several equal Content-Length values count as one."""
    fields = headers.getall("Content-Length", ())
    if not fields:
        return None
    length = fields[0]
    if len(fields) > 1 or "," in length:
        lengths = {value.strip() for field in fields for value in field.split(",")}
        length = lengths.pop() if len(lengths) == 1 else ""
    if not length.isdigit() or not length.isascii():
        raise BadMessage("invalid Content-Length")
    return int(length)


def final_coding_is_chunked(headers: CIMultiDict[str]) -> bool:
    return headers.getall("Transfer-Encoding")[-1].rsplit(",", 1)[-1].strip().lower() == "chunked"


class BodyDecoder:
    """The body that follows a head, fed as its bytes arrive; each piece of body goes to `deliver`.

    `feed` returns True once the body is complete; the bytes that came after it are in `rest`.
    """

    __slots__ = ("_deliver", "_state", "_remaining", "_pending", "rest")

    def __init__(self, deliver: Callable[[bytes], None], *, length: int | None = None, chunked: bool = False):
        self._deliver = deliver
        self._remaining = length or 0
        self._pending = b""
        self.rest = b""
        if chunked:
            self._state = _CHUNK_SIZE
        elif length is None:
            self._state = _UNTIL_CLOSE
        else:
            self._state = _LENGTH if length else _DONE

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def until_close(self) -> bool:
        """The body ends when the connection does (an answer with neither length nor chunks)."""
        return self._state == _UNTIL_CLOSE

    def feed(self, data: bytes) -> bool:
        if self._pending:
            data, self._pending = self._pending + data, b""
        # Walked with a position, not by slicing off what was read: a read holding many small
        # chunks (a burst of streamed tokens) would otherwise copy its rest once per chunk.
        position, size = 0, len(data)
        while position < size:
            state = self._state
            if state == _LENGTH or state == _CHUNK_DATA:
                taken = min(self._remaining, size - position)
                self._deliver(data[position : position + taken])  # the whole of `data`: no copy
                position += taken
                self._remaining -= taken
                if not self._remaining:
                    self._state = _DONE if state == _LENGTH else _CHUNK_END
            elif state == _CHUNK_SIZE:
                end = self._line_end(data, position, b"\r\n", MAX_CHUNK_LINE, "chunk size line")
                if end < 0:
                    return False
                length = data[position:end].split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(length):
                    raise BadMessage("invalid chunk size")
                self._remaining = int(length, 16)
                self._state = _CHUNK_DATA if self._remaining else _TRAILERS
                position = end + 2
            elif state == _CHUNK_END:
                if size - position < 2:
                    self._pending = data[position:]
                    return False
                if not data.startswith(b"\r\n", position):
                    raise BadMessage("chunk not followed by CRLF")
                self._state = _CHUNK_SIZE
                position += 2
            elif state == _TRAILERS:
                # Trailer fields, if any, are dropped; an empty line ends the body.
                if data.startswith(b"\r\n", position):
                    position += 2
                else:
                    end = self._line_end(data, position, b"\r\n\r\n", MAX_TRAILERS, "trailers")
                    if end < 0:
                        return False
                    position = end + 4
                self._state = _DONE
            elif state == _UNTIL_CLOSE:
                self._deliver(data[position:])
                return False
            else:
                break
        if self._state == _DONE:
            self.rest = data[position:]
            return True
        return False

    def _line_end(self, data: bytes, position: int, delimiter: bytes, limit: int, what: str) -> int:
        """Where `delimiter` is in `data` from `position`; -1 when it has not come yet (the rest
        is kept for the next feed)."""
        end = data.find(delimiter, position)
        if end < 0:
            if len(data) - position > limit:
                raise BadMessage(f"{what} too large")
            self._pending = data[position:]
        return end
