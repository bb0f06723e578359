"""The headers every response of the proxy carries, set before its head is sent."""

from __future__ import annotations

from aiohttp import web

from mooltiproxy.serving.context import RequestContext
from mooltiproxy.serving.cors import add_allow_origin


def stamp(request: web.BaseRequest, context: RequestContext | None, response: web.StreamResponse) -> None:
    """The request id, the target that answered, the CORS origin, and a Server header that names no
    software version."""
    headers = response.headers
    if context is not None:
        headers["X-Request-ID"] = context.request_id
        if context.answered_by is not None:
            headers["X-Mooltiproxy-Target"] = context.answered_by
        if context.rate_headers is not None:
            for name in [name for name in headers if name.lower().startswith("x-ratelimit-")]:
                headers.popall(name, None)
            headers.update(context.rate_headers)
    headers["Server"] = "mooltiproxy"  # a target's own (its software and version) is not relayed
    add_allow_origin(request, response)
