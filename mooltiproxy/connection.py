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

from multidict import CIMultiDictProxy

from .deadline import Deadline
from .http1 import BadMessage, BodyDecoder, content_length, final_coding_is_chunked, parse_head

MAX_HEAD_SIZE = 64 * 1024
# Body bytes buffered for a slow consumer before reading from the upstream is paused.
HIGH_WATER = 1 << 20
# The reason phrase: tabs, spaces, visible characters and obs-text (RFC 9112 4).
_STATUS = re.compile(r"HTTP/1\.[01] ([1-5][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")

# Connection states: no request, waiting for the answer's head, reading its body, answer complete.
_IDLE, _HEAD, _BODY, _DONE = range(4)


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
        self._body: BodyDecoder | None = None
        self._keep_alive = True
        self._no_body = False
        self._received = False  # any byte of the current answer
        self._response: UpstreamResponse | None = None
        self._error: Exception | None = None
        self._waiter: asyncio.Future | None = None
        self._silence = Deadline(self._loop, self._time_out)
        self._write_ready: asyncio.Future | None = None
        self._reading_paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._silence.cancel()
        if self._state == _BODY and self._body.until_close:
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
        except BadMessage as error:
            self._fail(BadAnswer(str(error)))
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
        if self._read_timeout:
            self._silence.start(self._read_timeout)
        try:
            await waiter
        finally:
            self._waiter = None
            self._silence.stop()

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
        head_ended = False
        while data and self._state == _HEAD:
            self._received = True
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_HEAD_SIZE:
                    raise BadMessage("answer head too large")
                self._buffer = data
                return
            self._start(data[:end])
            data = data[end + 4 :]
            head_ended = True
        if not data:
            return
        if self._state == _BODY:
            length = self._response.content_length
            if head_ended and length is not None and len(data) >= length:
                # The usual case: the whole body came with the head.
                self._response._append(data[:length])
                self._finish()
                data = data[length:]
            elif self._body.feed(data):
                self._finish()
                data = self._body.rest
            else:
                return
        if data:  # bytes nobody asked for: this connection cannot be trusted again
            self.closed = True
            self.transport.close()

    def _start(self, head: bytes) -> None:
        status_line, headers = parse_head(head)
        matched = _STATUS.fullmatch(status_line)
        if matched is None:
            raise BadMessage("invalid status line")
        status = int(matched[1])
        if 100 <= status < 200:
            if status == 101:
                raise BadMessage("unexpected protocol switch")
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        if "Transfer-Encoding" in headers and "Content-Length" in headers:
            # The length is not to be trusted, nor forwarded (RFC 9112 6.3), nor is the connection.
            headers.popall("Content-Length")
            self._keep_alive = False
        response = UpstreamResponse(self, status, matched[2] or "", CIMultiDictProxy(headers))
        self._response = response
        connection = headers.get("Connection", "").lower()
        if "close" in connection or (head.startswith(b"HTTP/1.0") and "keep-alive" not in connection):
            self._keep_alive = False
        if self._no_body or status == 204 or status == 304:
            self._finish()
        else:
            if "Transfer-Encoding" in headers:
                chunked = final_coding_is_chunked(headers)
                self._body = BodyDecoder(self._deliver, chunked=chunked)
                self._keep_alive = self._keep_alive and chunked
            else:
                length = response.content_length = content_length(headers)
                self._body = BodyDecoder(self._deliver, length=length)
                self._keep_alive = self._keep_alive and length is not None
            self._state = _BODY
            if self._body.done:
                self._finish()
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
