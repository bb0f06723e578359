"""A client's request body, read whole from aiohttp's stream within the size limit and the time a
client is given, and decoded from its Content-Encoding (bounded: a small gzip never expands past the
limit in memory)."""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from mooltiproxy.core.errors import ProxyError

_DECODABLE = ("gzip", "x-gzip", "deflate")


async def read_body(request: web.BaseRequest, limit: int, seconds: float) -> bytes:
    """The whole body: 413 past `limit` (without waiting for a body declared larger), 408 when it
    takes longer than `seconds`, 400 when its framing breaks, 415 / 400 for its encoding."""
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    if not request.body_exists:
        return b""
    coding = request.headers.get("Transfer-Encoding")
    if coding is not None and coding.lower() != "chunked":
        # llhttp frames `gzip, chunked` by its final coding, and the proxy does not undo the others.
        raise ProxyError(501, "Transfer codings other than chunked are not supported", code="not_implemented")
    content = request.content
    if content.is_eof():  # the usual case: the body came with its head
        body = content.read_nowait()
        if len(body) > limit:
            raise _too_large(limit)
    else:
        body = await _read_stream(request, limit, seconds)
    encoding = request.headers.get("Content-Encoding")
    return _decoded(body, encoding.strip().lower(), limit) if encoding else body


async def _read_stream(request: web.BaseRequest, limit: int, seconds: float) -> bytes:
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
