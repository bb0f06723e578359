"""A request whose head has arrived, as the handler sees it; its body arrives into it and is read
whole, decoded from its Content-Encoding, within the size limit."""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from .context import RequestContext
from .errors import ProxyError

if TYPE_CHECKING:
    from .http_server import ClientConnection

_DECODABLE = ("gzip", "x-gzip", "deflate")


class IncomingRequest:
    """A request whose head has arrived; its body is read with `read()`."""

    __slots__ = (
        "method",
        "raw_path",
        "path",
        "http10",
        "headers",
        "content_length",
        "keep_alive",
        "connection",
        "context",
        "_chunks",
        "_size",
        "_complete",
        "_too_large",
        "_error",
        "_waiter",
        "_continue_sent",
    )

    def __init__(
        self,
        connection: ClientConnection,
        method: str,
        raw_path: str,
        http10: bool,
        headers: CIMultiDict[str],
        length: int | None,
        keep_alive: bool,
    ):
        self.connection = connection
        self.method = method
        self.raw_path = raw_path
        self.path = raw_path.partition("?")[0]
        self.http10 = http10
        self.headers = headers
        self.content_length = length
        self.keep_alive = keep_alive
        self.context: RequestContext | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._complete = length == 0 or (length is None and "Transfer-Encoding" not in headers)
        self._too_large = False
        self._error: ProxyError | None = None
        self._waiter: asyncio.Future | None = None
        self._continue_sent = False

    @property
    def remote(self) -> str | None:
        return self.connection.remote

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.connection.transport

    @property
    def body_complete(self) -> bool:
        return self._complete

    async def read(self) -> bytes:
        """The whole body once it has arrived (see `received`); a body declared too large is not
        waited for."""
        length, limit = self.content_length, self.connection.max_body_size
        waits = length is None or length <= limit
        while waits and not self._complete and not self._too_large and self._error is None:
            if not self._continue_sent and not self.http10 and self.headers.get("Expect", "").lower() == "100-continue":
                self._continue_sent = True
                self.connection.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.received()

    def received(self) -> bytes:
        """The whole body, which has arrived (`body_complete`), decoded from its Content-Encoding;
        raises a ProxyError when it is too large or cannot be decoded."""
        limit = self.connection.max_body_size
        if self._too_large or (self.content_length is not None and self.content_length > limit):
            raise _too_large(limit)
        if self._error is not None:
            raise self._error
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        encoding = self.headers.get("Content-Encoding")
        return _decoded(body, encoding.strip().lower(), limit) if encoding else body

    def _append(self, data: bytes) -> None:
        if self._too_large:
            return
        self._size += len(data)
        if self._size > self.connection.max_body_size:
            self._too_large = True
            self._chunks.clear()
            self._wake()
        else:
            self._chunks.append(data)

    def _end_body(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: ProxyError) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _too_large(limit: int) -> ProxyError:
    return ProxyError(413, f"Request body larger than {limit} bytes", code="request_too_large")


def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding == "identity":
        return body
    if encoding not in _DECODABLE:
        raise ProxyError(415, f"Unsupported Content-Encoding '{encoding}'", code="unsupported_encoding")
    decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header, detected
    try:
        # Bounded: a small compressed body must not expand past the limit in memory.
        data = decoder.decompress(body, limit + 1)
    except zlib.error:
        raise ProxyError(400, f"Request body is not valid {encoding}", code="invalid_body") from None
    if len(data) > limit or decoder.unconsumed_tail:
        raise _too_large(limit)
    if not decoder.eof:
        raise ProxyError(400, f"Request body is truncated {encoding}", code="invalid_body")
    return data
