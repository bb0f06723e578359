"""The headers every response of the proxy carries, set before its head is sent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cors import add_allow_origin
from .responses import Response, StreamResponse

if TYPE_CHECKING:
    from .incoming import IncomingRequest


def stamp(request: IncomingRequest, response: Response | StreamResponse) -> None:
    """The request id, the target that answered and the CORS origin."""
    context = request.context
    if context is not None:
        response.headers["X-Request-ID"] = context.request_id
        if context.answered_by is not None:
            response.headers["X-Mooltiproxy-Target"] = context.answered_by
    add_allow_origin(request, response)


async def start_stream(request: IncomingRequest, response: StreamResponse) -> None:
    """Sends the head of a response whose body follows in pieces."""
    stamp(request, response)
    await response.prepare(request)
