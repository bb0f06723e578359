"""Relays an upstream response to the client chunk by chunk, as it arrives."""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from .headers import client_response_headers

log = logging.getLogger("mooltiproxy.relay")


async def relay(request: web.BaseRequest, upstream: aiohttp.ClientResponse, target_name: str) -> web.StreamResponse:
    """The body is relayed as received, still encoded, so its headers stay true."""
    response = web.StreamResponse(
        status=upstream.status, reason=upstream.reason, headers=client_response_headers(upstream.headers)
    )
    await response.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The status is already sent: cut the connection so the client cannot take a truncated
        # body for a complete one.
        log.warning("target %s failed in the middle of a response: %s", target_name, type(exc).__name__)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response
