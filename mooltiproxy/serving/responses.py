"""The proxy's own answers, as aiohttp responses, and writing any answer to a client that may have
stopped reading."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from mooltiproxy.core.errors import ProxyError

# A head is well under this; what is added to it to decide whether a write can block.
_HEAD_ALLOWANCE = 16 * 1024


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def text_response(text: str, **kwargs: Any) -> web.Response:
    return web.Response(text=text, **kwargs)


def error_response(error: ProxyError, body: bytes) -> web.Response:
    """The error, its body written in the shape of the API the client speaks on this route."""
    return web.Response(status=error.status, body=body, content_type="application/json", headers=error.headers)


def _may_block(transport: asyncio.Transport | None, size: int) -> bool:
    """Whether writing `size` more bytes may wait for the client: only once the transport's buffer
    passes its high-water mark, which a client that reads never lets happen."""
    if transport is None:
        return False
    return transport.get_write_buffer_size() + size + _HEAD_ALLOWANCE > transport.get_write_buffer_limits()[1]


async def bounded(request: web.BaseRequest, write: Any, size: int, seconds: float) -> None:
    """Runs `write()` (a write of about `size` bytes), which may wait at most `seconds` for a client
    that stopped reading: then the connection is cut (`abort`: `close` would wait for a buffer the
    client never drains) and ConnectionResetError raised. The usual write cannot wait and gets no timer."""
    transport = request.transport
    if not _may_block(transport, size):
        await write()
        return
    try:
        async with asyncio.timeout(seconds):
            await write()
    except TimeoutError:
        if transport is not None:
            transport.abort()
        raise ConnectionResetError("the client stopped reading") from None


async def send_whole(request: web.BaseRequest, response: web.Response, seconds: float) -> None:
    """A complete answer, head and body, written within `seconds` of the client's reading."""

    async def write() -> None:
        await response.prepare(request)
        await response.write_eof()

    body = response.body
    await bounded(request, write, len(body) if isinstance(body, bytes | bytearray) else 0, seconds)


class ClientStream:
    """A streamed answer: each write bounded as `bounded` says; the usual write, which cannot wait,
    is made directly (a stream makes one per token)."""

    __slots__ = ("response", "_request", "_seconds", "_loop", "last_write")

    def __init__(self, request: web.BaseRequest, response: web.StreamResponse, seconds: float):
        self._request = request
        self.response = response
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self.last_write = self._loop.time()

    async def start(self) -> None:
        await bounded(self._request, lambda: self.response.prepare(self._request), 0, self._seconds)
        self.last_write = self._loop.time()

    async def write(self, data: bytes) -> None:
        self.last_write = self._loop.time()
        if _may_block(self._request.transport, len(data)):
            await bounded(self._request, lambda: self.response.write(data), len(data), self._seconds)
        else:
            await self.response.write(data)

    async def ping(self, frame: bytes) -> None:
        try:
            await self.write(frame)
        except OSError:
            pass  # the client is gone or stopped reading: the stream's own next write says so

    async def end(self, data: bytes = b"") -> None:
        await bounded(self._request, lambda: self.response.write_eof(data), len(data), self._seconds)


class KeepAlives:
    """Keep-alives for every quiet stream, from one timer rather than a task per stream: a stream
    that has written nothing for `seconds` is sent its ping at the next sweep, the sweeps a quarter
    of `seconds` apart while some stream is watched."""

    def __init__(self, seconds: float):
        self._seconds = seconds
        self._streams: dict[ClientStream, bytes] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._pings: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    def watch(self, stream: ClientStream, ping: bytes) -> None:
        self._streams[stream] = ping
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._seconds / 4, self._sweep)

    def forget(self, stream: ClientStream) -> None:
        self._streams.pop(stream, None)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for stream, ping in self._streams.items():
            if now - stream.last_write >= self._seconds:
                stream.last_write = now  # one ping per quiet spell, however long its write takes
                self._pings.add(task := loop.create_task(stream.ping(ping)))
                task.add_done_callback(self._pings.discard)
        self._timer = loop.call_later(self._seconds / 4, self._sweep) if self._streams else None
