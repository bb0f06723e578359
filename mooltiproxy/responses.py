"""What the proxy answers: a complete response, or a stream whose body is written in pieces."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

if TYPE_CHECKING:
    from .http_server import ClientConnection
    from .incoming import IncomingRequest


def _own_headers(headers: Mapping[str, str] | None) -> CIMultiDict[str]:
    """A CIMultiDict is taken as it is (the hot path builds a fresh one); anything else is copied."""
    if isinstance(headers, CIMultiDict):
        return headers
    return CIMultiDict(headers) if headers else CIMultiDict()


class Response:
    """A response whose body is known whole; the server writes it in one go."""

    __slots__ = ("status", "reason", "headers", "body")
    prepared = False  # its head is not sent before the handler returns it

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        *,
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
        content_type: str | None = None,
    ):
        self.status = status
        self.reason = reason
        self.headers = _own_headers(headers)
        self.body = body
        if content_type is not None:
            self.headers["Content-Type"] = content_type


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode(), content_type="application/json")


def text_response(text: str, content_type: str = "text/plain", **kwargs: Any) -> Response:
    return Response(body=text.encode(), content_type=f"{content_type}; charset=utf-8", **kwargs)


class StreamResponse:
    """A response whose head is sent first (`prepare`) and whose body follows in pieces.

    The body is framed by the Content-Length header when there is one, else sent chunked.
    """

    __slots__ = ("status", "reason", "headers", "prepared", "_connection")

    def __init__(self, status: int = 200, *, headers: Mapping[str, str] | None = None, reason: str | None = None):
        self.status = status
        self.reason = reason
        self.headers = _own_headers(headers)
        self.prepared = False
        self._connection: ClientConnection | None = None

    async def prepare(self, request: IncomingRequest) -> None:
        self._connection = request.connection
        self._connection.start_stream(request, self)
        self.prepared = True

    async def write(self, data: bytes) -> None:
        """Raises ConnectionResetError once the client is gone."""
        await self._connection.write_body(data)

    async def write_eof(self, data: bytes = b"") -> None:
        await self._connection.end_body(data)
