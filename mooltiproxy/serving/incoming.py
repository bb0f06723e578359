"""A client's request body, read whole from aiohttp's stream within the size limit and the time a
client is given, and decoded from its Content-Encoding (bounded: a small gzip never expands past the
limit in memory)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable

from aiohttp import web

from mooltiproxy.core.content_length import content_length
from mooltiproxy.core.errors import ProxyError

_DECODABLE = ("gzip", "x-gzip", "deflate")


class BodyBudget:
    """Request body bytes the process holds at once, all requests together. Past the budget a
    request is refused with a 503 before its body is read: many large bodies at once would
    otherwise take the process's memory (a translated body is held about twice, with its prompt)."""

    def __init__(self) -> None:
        self.held = 0

    def take(self, size: int, limit: int) -> None:
        if self.held + size > limit:
            raise ProxyError(
                503,
                "The proxy is holding as many request bytes as it may; try again shortly",
                code="overloaded",
                headers={"Retry-After": "1"},
            )
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size


async def read_body(request: web.BaseRequest, limit: int, seconds: float, take: Callable[[int], None]) -> bytes:
    """The whole body: 413 past `limit` (without waiting for a body declared larger), 408 when it
    takes longer than `seconds`, 400 when its framing breaks, 415 / 400 for its encoding. `take`
    counts its bytes in the process's budget as they are known (and raises past it)."""
    length = content_length(request.headers)
    if length is not None and length > limit:
        raise _too_large(limit)
    if not request.body_exists:
        return b""
    if length is not None:
        take(length)
    coding = request.headers.get("Transfer-Encoding")
    if coding is not None and coding.lower() != "chunked":
        # llhttp frames `gzip, chunked` by its final coding, and the proxy does not undo the others.
        raise ProxyError(501, "Transfer codings other than chunked are not supported", code="not_implemented")
    content = request.content
    if content.is_eof():  # the usual case: the body came with its head
        body = content.read_nowait()
        if len(body) > limit:
            raise _too_large(limit)
        if length is None:
            take(len(body))
    else:
        body = await _read_stream(request, limit, seconds, take if length is None else None)
    encoding = request.headers.get("Content-Encoding")
    if not encoding:
        return body
    decoded = _decoded(body, encoding.strip().lower(), limit)
    take(max(0, len(decoded) - len(body)))
    return decoded


async def _read_stream(
    request: web.BaseRequest, limit: int, seconds: float, take: Callable[[int], None] | None
) -> bytes:
    if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
        # The interim answer the client waits for before sending the body (as aiohttp's docs do it).
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(seconds):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                if take is not None:  # a chunked body, counted as it comes
                    take(len(chunk))
                chunks.append(chunk)
    except TimeoutError:
        raise ProxyError(408, "The request body took too long to arrive", code="request_timeout") from None
    except (ProxyError, ConnectionError):
        raise
    except Exception as exc:  # the parser's verdict on broken framing, set on the stream
        raise ProxyError(400, f"Malformed request body: {type(exc).__name__}", code="bad_request") from None
    return b"".join(chunks)


def _too_large(limit: int) -> ProxyError:
    return ProxyError(413, f"Request body larger than {limit} bytes", code="request_too_large")


def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding == "identity":
        return body
    if encoding not in _DECODABLE:
        raise ProxyError(415, f"Unsupported Content-Encoding '{encoding}'", code="unsupported_encoding")
    decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header, detected
    try:
        data = decoder.decompress(body, limit + 1)
    except zlib.error:
        raise ProxyError(400, f"Request body is not valid {encoding}", code="invalid_body") from None
    if len(data) > limit or decoder.unconsumed_tail:
        raise _too_large(limit)
    if not decoder.eof:
        raise ProxyError(400, f"Request body is truncated {encoding}", code="invalid_body")
    return data
