"""One keep-alive HTTP/1.1 connection to an upstream: it writes a request and parses the answer as
its bytes arrive (head, then a body framed by Content-Length, chunked transfer or the close).

Written for the proxy's hot path: a small answer that arrives in one read is parsed in that read,
with no task, timer or copy beyond the body slice; a large or streamed one is handed over chunk by
chunk, with reading paused while the consumer lags.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable

from multidict import CIMultiDict, CIMultiDictProxy

MAX_HEAD_SIZE = 64 * 1024
MAX_CHUNK_LINE = 4096
# Body bytes buffered for a slow consumer before reading from the upstream is paused.
HIGH_WATER = 1 << 20
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_STATUS = re.compile(r"HTTP/1\.[01] ([1-5][0-9][0-9])(?: (.*))?")

# Parser states.
_IDLE, _HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(9)


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before its answer was complete."""


class BadAnswer(ConnectionError):
    """The upstream's answer is not valid HTTP/1.1."""


class UpstreamResponse:
    """An answer whose head has arrived; its body arrives as the upstream sends it.

    The holder must call `release()` (or `close()`) once done: a completely read answer gives its
    connection back to the pool, any other closes it.
    """

    __slots__ = ("status", "reason", "headers", "content_length", "_connection", "_chunks", "_size", "_eof", "_decoder")

    def __init__(self, connection: UpstreamConnection, status: int, reason: str, headers: CIMultiDictProxy[str]):
        self._connection = connection
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content_length: int | None = None
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._decoder: zlib._Decompress | None = None

    def decode_content(self) -> None:
        """Have the body decoded from its Content-Encoding (gzip or deflate) as it is read."""
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # either header, detected
        elif encoding != "identity":
            raise BadAnswer(f"unsupported Content-Encoding {encoding!r}")

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    async def read(self) -> bytes:
        """The whole body."""
        while not self._eof:
            await self._connection.wait()
        return self._take()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: whatever is buffered at each step, joined."""
        while True:
            if self._chunks:
                data = self._take()
                if data:
                    yield data
            elif self._eof:
                return
            else:
                await self._connection.wait()

    def release(self) -> None:
        self._connection.release(reusable=self._eof)

    def close(self) -> None:
        self._connection.release(reusable=False)

    def _take(self) -> bytes:
        """Everything buffered, decoded; reading from the upstream goes on if it was paused."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._connection.consumed()
        if self._decoder is None:
            return data
        try:
            data = self._decoder.decompress(data)
            return data + self._decoder.flush() if self._eof else data
        except zlib.error as exc:
            raise BadAnswer(f"undecodable body: {exc}") from None

    def _append(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)


class UpstreamConnection(asyncio.Protocol):
    """The protocol of one connection; `UpstreamPool` hands it out for one request at a time."""

    def __init__(self, origin: object, read_timeout: float | None):
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._read_timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self._on_release: Callable[[UpstreamConnection, bool], None] | None = None
        self._state = _IDLE
        self._buffer = b""
        self._remaining = 0
        self._keep_alive = True
        self._no_body = False
        self._received = False  # any byte of the current answer
        self._response: UpstreamResponse | None = None
        self._error: Exception | None = None
        self._waiter: asyncio.Future | None = None
        self._write_ready: asyncio.Future | None = None
        self._reading_paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == _UNTIL_CLOSE:
            self._finish()
        elif self._state not in (_IDLE, _DONE):
            self._fail(UpstreamClosed("the upstream closed the connection"))
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_exception(UpstreamClosed("the upstream closed the connection"))

    def pause_writing(self) -> None:
        self._write_ready = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        try:
            self._feed(data)
        except BadAnswer as error:
            self._fail(error)
            self.transport.close()

    # The request side

    async def request(self, head: bytes, body: bytes | None, *, no_body: bool) -> UpstreamResponse:
        """Writes the request and returns the answer once its head has arrived."""
        self._state, self._no_body, self._received = _HEAD, no_body, False
        self._response, self._error, self._keep_alive = None, None, True
        transport = self.transport
        if body is not None and len(body) <= 65536:
            transport.write(head + body)
        else:
            transport.write(head)
            if body:
                transport.write(body)
        if self._write_ready is not None:
            await self._write_ready
        while self._response is None:
            await self.wait()
        return self._response

    @property
    def received_nothing(self) -> bool:
        """The upstream sent no byte of the current answer (a stale keep-alive connection)."""
        return not self._received

    async def wait(self) -> None:
        """Until more of the answer arrives; TimeoutError after `read_timeout` of silence."""
        if self._error is not None:
            raise self._error
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(self._read_timeout, self._time_out) if self._read_timeout else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def consumed(self) -> None:
        """The consumer took everything buffered: reading goes on if it was paused."""
        if self._reading_paused:
            self._reading_paused = False
            if not self.closed:
                self.transport.resume_reading()

    def release(self, *, reusable: bool) -> None:
        if self._on_release is None:  # released already
            return
        reusable = reusable and self._state == _DONE and self._keep_alive and not self.closed
        if not reusable:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self._state = _IDLE
        self._response = None
        on_release, self._on_release = self._on_release, None
        on_release(self, reusable)

    def lend(self, on_release: Callable[[UpstreamConnection, bool], None]) -> None:
        self._on_release = on_release

    def discard(self) -> None:
        """Closed without a word to the pool (which accounts for it itself)."""
        self._on_release = None
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # Parsing

    def _feed(self, data: bytes) -> None:
        while data:
            state = self._state
            if state == _HEAD:
                self._received = True
                end = self._find(data, b"\r\n\r\n", MAX_HEAD_SIZE, "answer head")
                if end < 0:
                    return
                self._start(data[:end])
                data = data[end + 4 :]
            elif state == _LENGTH or state == _CHUNK_DATA:
                remaining = self._remaining
                if len(data) > remaining:
                    data, rest = data[:remaining], data[remaining:]
                else:
                    rest = b""
                self._remaining = remaining - len(data)
                self._deliver(data)
                if not self._remaining:
                    if state == _LENGTH:
                        self._finish()
                    else:
                        self._state = _CHUNK_END
                data = rest
            elif state == _CHUNK_SIZE:
                end = self._find(data, b"\r\n", MAX_CHUNK_LINE, "chunk size line")
                if end < 0:
                    return
                size = data[:end].split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size):
                    raise BadAnswer("invalid chunk size")
                self._remaining = int(size, 16)
                self._state = _CHUNK_DATA if self._remaining else _TRAILERS
                data = data[end + 2 :]
            elif state == _CHUNK_END:
                if len(data) < 2:
                    self._buffer = data
                    return
                if data[:2] != b"\r\n":
                    raise BadAnswer("chunk not followed by CRLF")
                self._state = _CHUNK_SIZE
                data = data[2:]
            elif state == _TRAILERS:
                # Trailer fields, if any, are dropped; an empty line ends the answer.
                end = 0 if data.startswith(b"\r\n") else self._find(data, b"\r\n\r\n", MAX_HEAD_SIZE, "trailers")
                if end < 0:
                    return
                data = data[end + (2 if end == 0 else 4) :]
                self._finish()
            elif state == _UNTIL_CLOSE:
                self._deliver(data)
                return
            else:  # bytes nobody asked for: this connection cannot be trusted again
                self.closed = True
                self.transport.close()
                return

    def _find(self, data: bytes, delimiter: bytes, limit: int, what: str) -> int:
        """Where `delimiter` is in `data`; -1 when it has not come yet (data kept for the next read)."""
        end = data.find(delimiter)
        if end < 0:
            if len(data) > limit:
                raise BadAnswer(f"{what} too large")
            self._buffer = data
        return end

    def _start(self, head: bytes) -> None:
        status, reason, headers = _parse_head(head)
        if 100 <= status < 200:
            if status == 101:
                raise BadAnswer("unexpected protocol switch")
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        if "Transfer-Encoding" in headers and "Content-Length" in headers:
            # The length is not to be trusted, nor forwarded (RFC 9112 6.3), nor is the connection.
            headers.popall("Content-Length")
            self._keep_alive = False
        response = UpstreamResponse(self, status, reason, CIMultiDictProxy(headers))
        self._response = response
        connection = headers.get("Connection", "").lower()
        if "close" in connection or (head.startswith(b"HTTP/1.0") and "keep-alive" not in connection):
            self._keep_alive = False
        if self._no_body or status == 204 or status == 304:
            self._finish()
        elif "Transfer-Encoding" in headers:
            codings = headers.getall("Transfer-Encoding")
            if codings[-1].rsplit(",", 1)[-1].strip().lower() == "chunked":
                self._state = _CHUNK_SIZE
            else:
                self._state, self._keep_alive = _UNTIL_CLOSE, False
        elif "Content-Length" in headers:
            lengths = set(headers.getall("Content-Length"))
            length = lengths.pop()
            if lengths or not length.isdigit() or not length.isascii():
                raise BadAnswer("invalid Content-Length")
            self._remaining = response.content_length = int(length)
            self._state = _LENGTH
            if not self._remaining:
                self._finish()
        else:
            self._state, self._keep_alive = _UNTIL_CLOSE, False
        self._wake()

    def _deliver(self, data: bytes) -> None:
        response = self._response
        response._append(data)
        if response._size > HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._state = _DONE
        self._response._eof = True
        self._wake()

    def _fail(self, error: Exception) -> None:
        self._error = error
        self._keep_alive = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _time_out(self) -> None:
        self._fail(TimeoutError())
        self.transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _parse_head(head: bytes) -> tuple[int, str, CIMultiDict[str]]:
    """Status, reason and headers; anything that could smuggle or split is refused."""
    if head.count(b"\n") != head.count(b"\r\n") or head.count(b"\r") != head.count(b"\r\n") or b"\0" in head:
        raise BadAnswer("stray CR, LF or NUL in the answer head")
    # Latin-1 maps each byte to one character, so headers relayed to the client keep their bytes.
    status_line, *lines = head.decode("latin-1").split("\r\n")
    matched = _STATUS.fullmatch(status_line)
    if matched is None:
        raise BadAnswer("invalid status line")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name[0] in " \t" or name[-1] in " \t":
            raise BadAnswer("invalid header line")
        headers.add(name, value.strip(" \t"))
    return int(matched[1]), matched[2] or "", headers
