"""The proxy's HTTP/1.1 server: one protocol object per client connection, on plain asyncio.

- Requests on a connection are served one at a time, in the order they came; pipelined ones wait
  in the buffer (reading pauses when too much waits).
- A whole request head must arrive within `client_timeout`, which also closes idle keep-alive
  connections. Heads are parsed strictly (see http1): a malformed one gets 400, a too large one 431,
  a transfer coding other than chunked 501, and the connection is closed.
- The body arrives into the request (incoming.py) as it comes, up to `max_body_size`; the handler
  reads it whole.
- A complete response is written with one write; a stream is sent chunked (or by its length).
- A client that goes away cancels its request's handler, which closes the upstream request at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus

from multidict import CIMultiDict

from .deadline import Deadline
from .errors import ProxyError, error_body
from .http1 import TOKEN_PATTERN, BadMessage, BodyDecoder, content_length, encode_head, field_lines, parse_head
from .incoming import IncomingRequest
from .responses import Response, StreamResponse

log = logging.getLogger("mooltiproxy.server")

# The request line and all header fields together, and any one line of them.
MAX_HEAD_SIZE = 32 * 1024
MAX_LINE_SIZE = 16 * 1024
# Bytes of pipelined requests buffered while one is served, before reading pauses.
_PIPELINE_LIMIT = 256 * 1024
# After an answer to a request whose body is still coming, the rest is read and dropped for this
# long before closing: closing at once could reset the connection before the client reads the answer.
_LINGER_SECONDS = 1.0
_REQUEST_LINE = re.compile(rf"({TOKEN_PATTERN}) ([!-~]+) HTTP/1\.([01])")
_REASONS = {status.value: status.phrase for status in HTTPStatus}
# How a stream's body is framed.
_CHUNKED, _RAW, _NO_BODY = range(3)

Handler = Callable[[IncomingRequest], Awaitable[Response | StreamResponse]]


class UnsupportedTransfer(BadMessage):
    """A transfer coding the server does not implement (501)."""


class ClientConnection(asyncio.Protocol):
    """One client's connection: reads requests, runs the handler on each in turn, writes answers."""

    def __init__(self, server: HttpServer):
        self._server = server
        self._loop = server.loop
        self.max_body_size = server.max_body_size
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self._buffer = b""
        self._request: IncomingRequest | None = None  # being served
        self._body: BodyDecoder | None = None  # the served request's body, while it arrives
        self._task: asyncio.Task | None = None
        # Idle, or a head that comes too slowly: closed without an answer.
        self._head_deadline = Deadline(self._loop, self._close_now)
        self._lost = False
        self._lingering = False
        self._reading_paused = False
        self._drain: asyncio.Future | None = None
        # The current answer: its head was sent, how its body is framed, whether the connection stays.
        self._head_sent = False
        self._framing = _CHUNKED
        self._keep_alive = False
        self._ended = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        self._server.connections.add(self)
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._server.connections.discard(self)
        self._head_deadline.cancel()
        if self._task is not None:
            self._task.cancel()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("the client is gone"))

    def pause_writing(self) -> None:
        self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)
        if self._request is None and self._buffer:
            self._next_request()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._body is not None:
            try:
                if not self._body.feed(data):
                    return
            except BadMessage as error:
                # The handler answers 400; what else comes on this connection is dropped.
                log.warning("refused a malformed request body from %s: %s", self.remote or "-", error)
                self._body, self._lingering = None, True
                self._request._fail(ProxyError(400, f"Malformed request body: {error}", code="bad_request"))
                return
            data, self._body = self._body.rest, None
            self._request._end_body()
            if not data:
                return
        self._buffer = self._buffer + data if self._buffer else data
        if self._request is None:
            self._next_request()
        elif len(self._buffer) > _PIPELINE_LIMIT and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    # Requests

    def _next_request(self) -> None:
        buffer = self._buffer
        if buffer.startswith(b"\r\n"):  # empty lines before a request line are ignored (RFC 9112 2.2)
            buffer = buffer.lstrip(b"\r\n")
        end = buffer.find(b"\r\n\r\n")
        if end < 0 or end > MAX_LINE_SIZE:
            self._buffer = buffer
            too_large = len(buffer) > MAX_HEAD_SIZE if end < 0 else end > MAX_HEAD_SIZE
            if too_large or any(len(line) > MAX_LINE_SIZE for line in buffer[: max(end, 0)].split(b"\r\n")):
                self._refuse(431, "Request header fields too large")
                return
            if end < 0:
                return
        try:
            request, chunked = self._parse_request(buffer[:end])
        except UnsupportedTransfer as error:
            self._refuse(501, str(error))
            return
        except BadMessage as error:
            self._refuse(400, str(error))
            return
        self._head_deadline.stop()
        rest, self._buffer = buffer[end + 4 :], b""
        self._request, self._head_sent, self._ended = request, False, False
        self._task = self._loop.create_task(self._serve(request))
        if not request._complete:
            length = request.content_length
            if not chunked and len(rest) >= length:  # the usual case: the body came with the head
                request._append(rest[:length])
                request._end_body()
                rest = rest[length:]
            else:
                self._body = BodyDecoder(request._append, length=length, chunked=chunked)
                if rest:
                    self.data_received(rest)
                return
        if rest:
            self._buffer = rest

    def _parse_request(self, head: bytes) -> tuple[IncomingRequest, bool]:
        start_line, headers = parse_head(head)
        matched = _REQUEST_LINE.fullmatch(start_line)
        if matched is None:
            raise BadMessage("invalid request line")
        method, target, minor = matched.groups()
        http10 = minor == "0"
        if not http10 and len(headers.getall("Host", ())) != 1:
            raise BadMessage("an HTTP/1.1 request needs exactly one Host header")
        connection = headers.get("Connection", "").lower()
        keep_alive = "keep-alive" in connection if http10 else "close" not in connection
        chunked = "Transfer-Encoding" in headers
        if chunked:
            # Both framings at once is how requests get smuggled past a proxy: refused.
            if "Content-Length" in headers or http10:
                raise BadMessage("Transfer-Encoding with Content-Length, or in an HTTP/1.0 request")
            codings = [
                coding.strip().lower() for field in headers.getall("Transfer-Encoding") for coding in field.split(",")
            ]
            if codings != ["chunked"]:
                raise UnsupportedTransfer("transfer codings other than chunked are not supported")
            length = None
        else:
            length = content_length(headers)
        if target[0] != "/" and target != "*":
            target = _origin_form(target)
        request = IncomingRequest(self, method, target, http10, headers, length, keep_alive)
        return request, chunked

    async def _serve(self, request: IncomingRequest) -> None:
        try:
            response = await self._server.handler(request)
        except asyncio.CancelledError:
            return  # the client went away, or the server stops: the handler logged the request
        except Exception as exc:  # the handler answers its own errors; this is a last resort
            log.error("unhandled %s serving %s %s", type(exc).__name__, request.method, request.path)
            response = Response(500, error_body(500, "Internal proxy error", "internal_error"))
        self._task = None
        if self._lost:
            return
        if not self._head_sent:
            self._send(request, response)
        self._request = None
        if not (self._head_sent and self._ended and self._keep_alive):
            self._close()
            return
        self._wait_for_head()
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        if self._buffer and self._drain is None:
            self._next_request()

    def _refuse(self, status: int, reason: str) -> None:
        """A request head that cannot be read is answered with an error and the connection closed."""
        log.warning("refused a malformed request from %s: %s", self.remote or "-", reason)
        self._buffer = b""
        body = error_body(status, f"Malformed request: {reason}", "bad_request")
        head = _head(status, None, CIMultiDict({"Content-Type": "application/json"}), len(body), False, False)
        self.transport.write(head + body)
        self._lingering = True
        self._close()

    def _close(self) -> None:
        """Closes now, or once the rest of a request that nobody read has been dropped."""
        self._request = None
        if not (self._lingering or self._body is not None) or self._lost:
            self.transport.close()
            return
        self._lingering, self._body = True, None
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._loop.call_later(_LINGER_SECONDS, self.transport.close)

    def _wait_for_head(self) -> None:
        self._head_deadline.start(self._server.client_timeout)

    def _close_now(self) -> None:
        self.transport.close()

    def close_if_idle(self) -> None:
        if self._request is None:
            self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    # Answers

    def _keeps_alive(self, request: IncomingRequest) -> bool:
        return request.keep_alive and request._complete and not self._server.closing

    def _send(self, request: IncomingRequest, response: Response) -> None:
        status, headers, body = response.status, response.headers, response.body
        self._head_sent = self._ended = True
        self._keep_alive = keep_alive = self._keeps_alive(request)
        if status < 200 or status == 204 or status == 304:
            head, body = _head(status, response.reason, headers, None, keep_alive, request.http10), b""
        else:
            # A HEAD answer keeps the length its GET would have.
            length = None if request.method == "HEAD" and "Content-Length" in headers else len(body)
            head = _head(status, response.reason, headers, length, keep_alive, request.http10)
            if request.method == "HEAD":
                body = b""
        if len(body) <= 65536:
            self.transport.write(head + body if body else head)
        else:
            self.transport.writelines((head, body))

    def start_stream(self, request: IncomingRequest, response: StreamResponse) -> None:
        headers = response.headers
        self._head_sent = True
        self._keep_alive = keep_alive = self._keeps_alive(request)
        status = response.status
        if request.method == "HEAD" or status < 200 or status == 204 or status == 304:
            self._framing = _NO_BODY
        elif "Content-Length" in headers:
            self._framing = _RAW
        elif not request.http10:
            self._framing = _CHUNKED
            headers["Transfer-Encoding"] = "chunked"
        else:  # an HTTP/1.0 client: the end of the body is the end of the connection
            self._framing, self._keep_alive, keep_alive = _RAW, False, False
        self.transport.write(_head(status, response.reason, headers, None, keep_alive, request.http10))

    async def write_body(self, data: bytes) -> None:
        if self._lost:
            raise ConnectionResetError("the client is gone")
        if not data or self._framing == _NO_BODY:
            return
        if self._framing == _CHUNKED:
            self.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.transport.write(data)
        if self._drain is not None:
            await self._drain

    async def end_body(self, data: bytes) -> None:
        if data:
            await self.write_body(data)
        if self._framing == _CHUNKED and not self._lost:
            self.transport.write(b"0\r\n\r\n")
        self._ended = True


def _origin_form(target: str) -> str:
    """The path and query of an absolute-form target (http://host/path?query)."""
    scheme, separator, rest = target.partition("://")
    if not separator or scheme.lower() not in ("http", "https"):
        raise BadMessage("invalid request target")
    start = min((index for index in (rest.find("/"), rest.find("?")) if index >= 0), default=len(rest))
    path = rest[start:]
    return path if path.startswith("/") else "/" + path


_date = ["", 0]  # the Date header line and the second it was made for


def _date_line() -> str:
    now = int(time.time())
    if now != _date[1]:
        _date[:] = [f"Date: {formatdate(now, usegmt=True)}\r\n", now]
    return _date[0]


def _head(
    status: int, reason: str | None, headers: CIMultiDict[str], length: int | None, keep_alive: bool, http10: bool
) -> bytes:
    """The answer's head; `length`, when given, replaces any Content-Length in `headers`."""
    if length is not None:
        headers["Content-Length"] = str(length)
    connection = (
        "" if keep_alive and not http10 else "Connection: keep-alive\r\n" if keep_alive else "Connection: close\r\n"
    )
    # Date is single-valued: a relayed answer keeps the upstream's, the others get the proxy's.
    date = "" if "Date" in headers else _date_line()
    text = "".join(
        (
            f"HTTP/1.1 {status} {reason or _REASONS.get(status, 'Unknown')}\r\n",
            field_lines(headers) + "\r\n" if headers else "",
            date,
            connection,
            "\r\n",
        )
    )
    # Header values come from parsed heads or the proxy itself; a line break in one would split the
    # answer, so it is checked for rather than trusted.
    if text.count("\n") != len(headers) + 2 + bool(date) + bool(connection):
        raise ValueError("line break in a response header")
    return encode_head(text)


class HttpServer:
    """Listens, serves, and stops gracefully: no new connections, in-flight requests may finish."""

    def __init__(self, handler: Handler, *, client_timeout: float, max_body_size: int):
        self.handler = handler
        self.client_timeout = client_timeout
        self.max_body_size = max_body_size
        self.connections: set[ClientConnection] = set()
        self.closing = False
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None

    async def listen(self, host: str | None, port: int, ssl_context: ssl.SSLContext | None, reuse_port: bool) -> None:
        self._server = await self.loop.create_server(
            lambda: ClientConnection(self),
            host=host or None,
            port=port,
            ssl=ssl_context,
            reuse_port=reuse_port or None,
            backlog=1024,
            # A TLS handshake gets no more time than a request head.
            ssl_handshake_timeout=self.client_timeout if ssl_context else None,
        )

    @property
    def addresses(self) -> list[tuple]:
        return [sock.getsockname() for sock in self._server.sockets] if self._server else []

    async def shutdown(self, grace: float) -> None:
        self.closing = True
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.close_if_idle()
        deadline = self.loop.time() + grace
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        # Aborted handlers get the cancellation and write their access lines.
        await asyncio.sleep(0)
