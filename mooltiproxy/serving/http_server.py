"""The proxy's HTTP server: aiohttp's low-level server, whose C parser (llhttp) reads every byte a
client sends, with the limits and deadlines a shield needs.

- A connection that completes no request head within `client_timeout`, or idles that long between
  requests, is closed (aiohttp's keep-alive timer, armed from the connection's start).
- A malformed head is answered 400 by aiohttp and logged as one warning line that quotes nothing
  the client sent: no header value, so no key, reaches a log.
- A complete answer is written inside the handler under `client_timeout` (see responses.bounded):
  a client that stops reading is cut, and its target connection released.
- A client that goes away cancels its handler (handler_cancellation), which closes the target
  request at once.
- Stopping: no new connections; idle keep-alive connections close at once; requests and streams in
  flight may finish for `grace` seconds, and the server is done as soon as the last one is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion10, HttpVersion11, http_parser, web

from mooltiproxy.core.errors import ConfigError
from mooltiproxy.serving.responses import send_whole

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

# Development only: serve even where aiohttp's C parser is missing (see docs on security).
ALLOW_PURE_PYTHON_PARSER = "MOOLTIPROXY_ALLOW_PURE_PYTHON_PARSER"
# One request line or header field, and the number of fields (aiohttp's defaults).
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 128
# After an answer to a request whose body was not read, the rest is read and dropped for this long
# before closing: closing at once could reset the connection before the client reads the answer.
LINGER_SECONDS = 1.0
_VERSIONS = (HttpVersion10, HttpVersion11)


class _OneLine(logging.Filter):
    """aiohttp logs a refused request with a traceback whose message quotes the offending bytes
    (an Authorization line, say): one line naming the error's kind instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            status = getattr(error, "code", None)
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            record.msg = "refused a malformed request from %s: %s%s"
            record.args = (peer, type(error).__name__, f" ({status})" if isinstance(status, int) else "")
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


server_log = logging.getLogger("mooltiproxy.server")
server_log.addFilter(_OneLine())


def check_c_parser() -> None:
    """Refuses to serve on aiohttp's pure-Python parser, where its request-smuggling flaws were.
    No public API says which parser is in use: this comparison is the one look inside aiohttp."""
    c_parser = getattr(http_parser, "HttpRequestParserC", None)
    if c_parser is not None and http_parser.HttpRequestParser is c_parser:
        return
    if os.environ.get(ALLOW_PURE_PYTHON_PARSER) == "1":
        server_log.warning(
            "serving on aiohttp's pure-Python HTTP parser (%s=1): for development only", ALLOW_PURE_PYTHON_PARSER
        )
        return
    raise ConfigError(
        [
            "aiohttp's C HTTP parser (llhttp) is not in use (AIOHTTP_NO_EXTENSIONS set, or no binary wheel "
            "for this platform); the proxy does not serve on the pure-Python one"
        ]
    )


class HttpServer:
    def __init__(self, handler: Handler, *, client_timeout: float):
        self._handler = handler
        self._client_timeout = client_timeout
        self._server = web.Server(
            self._serve,
            handler_cancellation=True,
            access_log=None,  # the proxy writes its own access line
            logger=server_log,
            keepalive_timeout=client_timeout,
            max_line_size=MAX_LINE_SIZE,
            max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
            lingering_time=LINGER_SECONDS,
            auto_decompress=False,  # request bodies are decoded by the proxy, within max_body_size
        )
        self._listener: asyncio.Server | None = None

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.version not in _VERSIONS:  # llhttp also reads HTTP/0.9 and 2.0 request lines
            response: web.StreamResponse = web.Response(status=505, text="HTTP version not supported")
            response.force_close()
        else:
            response = await self._handler(request)
        if not response.prepared:
            try:
                await send_whole(request, response, self._client_timeout)  # type: ignore[arg-type]
            except ConnectionResetError:
                pass  # the client went away or stopped reading: its connection is closed
        return response

    async def listen(self, host: str | None, port: int, ssl_context: ssl.SSLContext | None, reuse_port: bool) -> None:
        self._listener = await asyncio.get_running_loop().create_server(
            self._server,
            host=host or None,
            port=port,
            ssl=ssl_context,
            reuse_port=reuse_port or None,
            backlog=1024,
            # A TLS handshake gets no more time than a request head.
            ssl_handshake_timeout=self._client_timeout if ssl_context else None,
        )

    @property
    def addresses(self) -> list[tuple]:
        return [sock.getsockname() for sock in self._listener.sockets] if self._listener else []

    async def shutdown(self, grace: float) -> None:
        if self._listener is None:
            return
        self._listener.close()
        self._server.pre_shutdown()  # idle keep-alive connections close now, busy ones after their answer
        await self._server.shutdown(grace)
