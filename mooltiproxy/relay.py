"""Relays an upstream response to the client chunk by chunk, as it arrives."""

from __future__ import annotations

import logging

from .connection import UpstreamResponse
from .headers import client_response_headers
from .incoming import IncomingRequest
from .responses import Response, StreamResponse
from .settings import Target
from .stamping import start_stream
from .upstream import upstream_failure

log = logging.getLogger("mooltiproxy.relay")


# Answers up to this size with a known length are read whole and sent in one write.
BUFFERED_BODY_LIMIT = 64 * 1024


async def relay(request: IncomingRequest, upstream: UpstreamResponse, target: Target) -> Response | StreamResponse:
    """The body is relayed as received, still encoded, so its headers stay true."""
    headers = client_response_headers(upstream.headers)
    length = upstream.content_length
    if length is not None and length <= BUFFERED_BODY_LIMIT:
        try:
            body = await upstream.read()
        except OSError as error:
            raise upstream_failure(target, error) from None
        return Response(upstream.status, body, reason=upstream.reason, headers=headers)
    response = StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    await start_stream(request, response)
    try:
        async for chunk in upstream.chunks():
            await response.write(chunk)
    except OSError as exc:  # timeouts included
        # The status is already sent: cut the connection so the client cannot take a truncated
        # body for a complete one.
        log.warning("target %s failed in the middle of a response: %s", target.name, type(exc).__name__)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response
