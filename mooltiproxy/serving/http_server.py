"""The proxy's HTTP server: aiohttp's low-level server, whose C parser (llhttp) reads every byte a
client sends, with the limits and deadlines a shield needs.

- A connection that completes no request head within `client_timeout`, or idles that long between
  requests, is closed (aiohttp's keep-alive timer, armed from the connection's start).
- A malformed head is answered 400 by aiohttp and logged as one warning line that quotes nothing
  the client sent: no header value, so no key, reaches a log.
- A complete answer is written inside the handler under `client_timeout` (see responses.bounded):
  a client that stops reading is cut, and its target connection released. Whatever else may leave
  answers waiting for a client (one that pipelines requests and reads nothing, say), a sweep each
  second cuts a connection whose unsent bytes have not gone down for `client_timeout`.
- A client that goes away cancels its handler (handler_cancellation), which closes the target
  request at once.
- Stopping: no new connections; idle keep-alive connections close at once; requests and streams in
  flight may finish for `grace` seconds, and the server is done as soon as the last one is.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import ssl
import struct
import sys
import termios
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
SWEEP_SECONDS = 1.0
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


# Linux says how many bytes a socket's kernel queue holds that the peer has not acknowledged: with
# the transport's own buffer, what the client has not read yet.
_KERNEL_QUEUE = getattr(termios, "TIOCOUTQ", None) if sys.platform.startswith("linux") else None


def _unsent(transport: asyncio.BaseTransport) -> int:
    waiting = transport.get_write_buffer_size() if isinstance(transport, asyncio.WriteTransport) else 0
    sock = transport.get_extra_info("socket")
    if _KERNEL_QUEUE is not None and sock is not None:
        try:
            waiting += struct.unpack("I", fcntl.ioctl(sock.fileno(), _KERNEL_QUEUE, b"\0\0\0\0"))[0]
        except OSError:
            pass
    return waiting


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
        self._channel: socket.socket | None = None  # where a worker is handed its connections
        self._opening: set[asyncio.Task[object]] = set()  # connections handed over, being set up
        self._sweeper: asyncio.Task[None] | None = None
        # Per connection with bytes waiting: their amount and when it last went down.
        self._waiting: dict[web.RequestHandler, tuple[int, float]] = {}

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

    async def listen(self, host: str | None, port: int, ssl_context: ssl.SSLContext | None) -> None:
        self._listener = await asyncio.get_running_loop().create_server(
            self._server,
            host=host or None,
            port=port,
            ssl=ssl_context,
            backlog=1024,
            # A TLS handshake gets no more time than a request head.
            ssl_handshake_timeout=self._client_timeout if ssl_context else None,
        )
        self._sweeper = asyncio.ensure_future(self._sweep_forever())

    def take_connections(
        self, channel: socket.socket, ssl_context: ssl.SSLContext | None, on_closed: Callable[[], object]
    ) -> None:
        """Serves the connections the supervisor of workers accepts and hands this worker, one file
        descriptor per message on `channel` (an AF_UNIX SOCK_SEQPACKET socket); `on_closed` once the
        supervisor has closed it."""
        loop = asyncio.get_running_loop()
        channel.setblocking(False)
        self._channel = channel
        loop.add_reader(channel.fileno(), self._take_one, loop, ssl_context, on_closed)
        self._sweeper = asyncio.ensure_future(self._sweep_forever())

    def _take_one(
        self, loop: asyncio.AbstractEventLoop, ssl_context: ssl.SSLContext | None, on_closed: Callable[[], object]
    ) -> None:
        assert self._channel is not None
        try:
            message, fds, _, _ = socket.recv_fds(self._channel, 1, 1)
        except BlockingIOError:
            return
        except OSError:
            message, fds = b"", []
        if not message:  # the supervisor is gone: nothing more will come
            loop.remove_reader(self._channel.fileno())
            on_closed()
            return
        for fd in fds:
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            opening = loop.create_task(
                loop.connect_accepted_socket(
                    self._server,
                    sock,
                    ssl=ssl_context,
                    ssl_handshake_timeout=self._client_timeout if ssl_context else None,
                )
            )
            self._opening.add(opening)
            opening.add_done_callback(self._opened)

    def _opened(self, opening: asyncio.Task[object]) -> None:
        self._opening.discard(opening)
        if not opening.cancelled() and opening.exception() is not None:  # a TLS handshake that failed, say
            server_log.info("a connection handed over failed to open: %s", type(opening.exception()).__name__)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self._sweep(asyncio.get_running_loop().time())

    def _sweep(self, now: float) -> None:
        """Cuts each connection whose client has not read for `client_timeout`: its unsent bytes
        have not gone down since then."""
        waiting: dict[web.RequestHandler, tuple[int, float]] = {}
        for connection in self._server.connections:
            transport = connection.transport
            unsent = _unsent(transport) if transport is not None else 0
            if transport is None or not unsent:
                continue
            before, since = self._waiting.get(connection, (unsent + 1, now))
            if unsent < before:
                since = now
            elif now - since >= self._client_timeout:
                server_log.info("cut a connection whose client read nothing for %g s", self._client_timeout)
                transport.abort()
                continue
            waiting[connection] = (unsent, since)
        self._waiting = waiting

    @property
    def addresses(self) -> list[tuple]:
        return [sock.getsockname() for sock in self._listener.sockets] if self._listener else []

    async def shutdown(self, grace: float) -> None:
        if self._listener is None and self._channel is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._listener is not None:
            self._listener.close()
        if self._channel is not None:
            asyncio.get_running_loop().remove_reader(self._channel.fileno())
            self._channel.close()
        self._server.pre_shutdown()  # idle keep-alive connections close now, busy ones after their answer
        await self._server.shutdown(grace)
