"""Streams a translated answer: upstream events in, the translator's server-sent chunks out.

The response status is committed only once the first upstream event is known, so an error that
opens the stream becomes a plain OpenAI error with its own status; a later one becomes an error
event, followed by the end of the stream. A client that hears nothing for `stream_keep_alive` seconds
(the target reading a long prompt, or a tool call held until it is whole) gets a keep-alive, so
that no reverse proxy or client cuts a stream that is only quiet.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from mooltiproxy.config.plugin_specs import StreamTranslator
from mooltiproxy.config.settings import Target
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.forwarding.exchange import Exchange
from mooltiproxy.forwarding.upstream import UPSTREAM_ERRORS, upstream_failure
from mooltiproxy.serving.context import RequestContext
from mooltiproxy.serving.responses import ClientStream, KeepAlives
from mooltiproxy.serving.stamping import stamp
from mooltiproxy.translation.refusals import upstream_error
from mooltiproxy.translation.sse import event_batches, frame

log = logging.getLogger("mooltiproxy.streaming")

STREAM_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def stream_translated(
    request: web.BaseRequest,
    context: RequestContext,
    exchange: Exchange,
    body: bytes | None,
    translator: StreamTranslator,
    client_timeout: float,
    keep_alives: KeepAlives | None,
) -> web.StreamResponse:
    target = exchange.target
    upstream = await exchange.open(body, decompress=True)
    try:
        if upstream.status != 200:
            try:
                answer = await upstream.read()
            except UPSTREAM_ERRORS as error:
                raise upstream_failure(target, error) from None
            raise upstream_error(upstream.status, answer, target.name, exchange.tried)
        batches = event_batches(upstream.chunks())
        batch = await _next_batch(batches, target)
        if batch is None:
            raise ProxyError(502, f"Target '{target.name}' closed the stream without an event", code="upstream_error")
        # The first event decides between a plain error and a stream.
        chunks = translator.event(batch[0])
        response = web.StreamResponse(headers=STREAM_HEADERS)
        stamp(request, context, response)
        stream = ClientStream(request, response, client_timeout)
        await stream.start()
        if keep_alives is not None:
            keep_alives.watch(stream, translator.ping)
        try:
            more, failure = _translate(translator, batch[1:])
            chunks += more
            while True:
                await _send(stream, chunks)
                if failure is not None:
                    # Ended here, not raised: an exception held by this frame would keep it alive.
                    await _end_with_error(stream, target, failure, translator)
                    return response
                if translator.finished:
                    break
                batch = await _next_batch(batches, target)
                if batch is None:
                    break
                chunks, failure = _translate(translator, batch)
            if not translator.complete:
                raise ProxyError(500, f"Target '{target.name}' ended the stream early", code="incomplete_generation")
            last = b"".join(map(frame, translator.end())) + translator.done  # a guard may still refuse it
        except ProxyError as error:
            await _end_with_error(stream, target, error, translator)
            return response
        finally:
            if keep_alives is not None:
                keep_alives.forget(stream)
        await stream.end(last)
        return response
    finally:
        # A stream left unread (client gone, stop string reached) closes its connection at once,
        # which ends the generation upstream.
        upstream.release()


async def stream_events(
    request: web.BaseRequest,
    context: RequestContext,
    translator: StreamTranslator,
    events: list[Any],
    client_timeout: float,
) -> web.StreamResponse:
    """A stream the proxy writes itself (a guard's answer): the events, through the translator."""
    chunks = [chunk for event in events for chunk in translator.event(event)] + translator.end()
    response = web.StreamResponse(headers=STREAM_HEADERS)
    stamp(request, context, response)
    stream = ClientStream(request, response, client_timeout)
    await stream.start()
    await stream.end(b"".join(map(frame, chunks)) + translator.done)
    return response


async def _end_with_error(
    stream: ClientStream, target: Target, error: ProxyError, translator: StreamTranslator
) -> None:
    """An error once the stream has started: an error event (in the client's API's shape), then the
    end of the stream."""
    log.warning("stream from target %s cut short: %s", target.name, error.message)
    await stream.end(translator.error_frame(error))


async def _next_batch(batches: AsyncIterator[list[str]], target: Target) -> list[str] | None:
    try:
        return await anext(batches, None)
    except UPSTREAM_ERRORS as error:
        raise upstream_failure(target, error) from None


def _translate(translator: StreamTranslator, batch: list[str]) -> tuple[list[Any], ProxyError | None]:
    """The chunks of a batch of events, and the error event that cut it short, if one did."""
    chunks: list[Any] = []
    for data in batch:
        if translator.finished:
            break
        try:
            chunks += translator.event(data)
        except ProxyError as error:
            return chunks, error
    return chunks, None


async def _send(stream: ClientStream, chunks: list[Any]) -> None:
    if chunks:
        await stream.write(b"".join(map(frame, chunks)))
