"""Relays a target's answer to the client: a small one whole, any other chunk by chunk as it arrives."""

from __future__ import annotations

import logging

from aiohttp import web

from mooltiproxy.config.settings import Target
from mooltiproxy.forwarding.headers import client_response_headers
from mooltiproxy.forwarding.upstream import UPSTREAM_ERRORS, UpstreamAnswer, upstream_failure
from mooltiproxy.forwarding.usage import UsageTail
from mooltiproxy.serving.context import RequestContext
from mooltiproxy.serving.responses import ClientStream
from mooltiproxy.serving.stamping import stamp

log = logging.getLogger("mooltiproxy.relay")


# Answers up to this size with a known length are read whole and sent in one write.
BUFFERED_BODY_LIMIT = 64 * 1024


async def relay(
    request: web.BaseRequest,
    context: RequestContext,
    upstream: UpstreamAnswer,
    target: Target,
    client_timeout: float,
    tail: UsageTail | None = None,
) -> web.StreamResponse:
    """The body is relayed as received, still encoded, so its headers stay true. The reason phrase
    is the status's own: the target's, which nothing reads (RFC 9112 4), is not worth its bytes.
    A `tail` sees the bytes go by, to read the usage the answer reports."""
    headers = client_response_headers(upstream.headers)
    length = upstream.content_length
    if length is not None:
        headers["Content-Length"] = str(length)  # as llhttp read it: leading zeros are not relayed
    if length is not None and length <= BUFFERED_BODY_LIMIT:
        try:
            body = await upstream.read()
        except UPSTREAM_ERRORS as error:
            raise upstream_failure(target, error) from None
        if tail is not None:
            tail.feed(body)
        return web.Response(status=upstream.status, headers=headers, body=body)
    response = web.StreamResponse(status=upstream.status, headers=headers)
    stamp(request, context, response)
    stream = ClientStream(request, response, client_timeout)
    await stream.start()
    chunks = upstream.chunks()
    while True:
        try:
            chunk = await anext(chunks, None)
        except UPSTREAM_ERRORS as error:  # timeouts included
            # The status is already sent: cut the connection so the client cannot take a truncated
            # body for a complete one.
            log.warning("target %s failed in the middle of a response: %s", target.name, type(error).__name__)
            if request.transport is not None:
                request.transport.abort()
            return response
        if chunk is None:
            break
        if tail is not None:
            tail.feed(chunk)
        await stream.write(chunk)
    await stream.end()
    return response
