"""Streams a translated answer: upstream events in, the translator's server-sent chunks out.

The response status is committed only once the first upstream event is known, so an error that
opens the stream becomes a plain OpenAI error with its own status; a later one becomes an error
event, followed by the end of the stream.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from aiohttp import web

from .errors import ProxyError, error_body, upstream_error
from .exchange import Exchange
from .sse import DONE, event_data, frame
from .upstream import upstream_failures

log = logging.getLogger("mooltiproxy.streaming")

STREAM_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class StreamTranslator(Protocol):
    finished: bool  # nothing more to read from upstream
    complete: bool  # the answer reached its end (rather than the upstream stopping early)

    def event(self, data: str) -> list[Any]: ...

    def end(self) -> list[Any]: ...


async def stream_translated(
    request: web.BaseRequest, exchange: Exchange, body: bytes, translator: StreamTranslator
) -> web.StreamResponse:
    target = exchange.target
    upstream = await exchange.open(body, decompress=True)
    try:
        if upstream.status != 200:
            with upstream_failures(target):
                raise upstream_error(upstream.status, await upstream.read(), target.name)
        events = event_data(upstream.content)
        with upstream_failures(target):
            first = await anext(events, None)
        if first is None:
            raise ProxyError(502, f"Target '{target.name}' closed the stream without an event", code="upstream_error")
        chunks = translator.event(first)
        response = web.StreamResponse(headers=STREAM_HEADERS)
        await response.prepare(request)
        await _send(response, chunks)
        try:
            while not translator.finished:
                with upstream_failures(target):
                    data = await anext(events, None)
                if data is None:
                    break
                await _send(response, translator.event(data))
            if not translator.complete:
                raise ProxyError(500, f"Target '{target.name}' ended the stream early", code="incomplete_generation")
        except ProxyError as error:
            log.warning("stream from target %s failed: %s", target.name, error.message)
            await response.write(b"data: " + error_body(error.status, error.message, error.code) + b"\n\n")
            await response.write_eof()
            return response
        await _send(response, translator.end())
        await response.write(DONE)
        await response.write_eof()
        return response
    finally:
        # A stream left unread (client gone, stop string reached) closes its connection at once,
        # which ends the generation upstream.
        if upstream.content.is_eof():
            upstream.release()
        else:
            upstream.close()


async def _send(response: web.StreamResponse, chunks: list[Any]) -> None:
    if chunks:
        await response.write(b"".join(frame(chunk) for chunk in chunks))
