"""Mapper chains (`in: [a, b]`): the links composed into one mapper, and their stream translators
into one translator, each link feeding the next."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mooltiproxy.config.plugin_specs import StreamTranslator
from mooltiproxy.config.settings import Endpoint, Mapper, StreamTranslatorFactory
from mooltiproxy.core.errors import ProxyError


def chained_mapper(links: Sequence[Mapper]) -> Mapper:
    if len(links) == 1:
        return links[0]

    def chain(payload: Any, endpoint: Endpoint, context: Any) -> Any:
        for link in links:
            payload = link(payload, endpoint, context)
        return payload

    return chain


def chained_translators(factories: Sequence[StreamTranslatorFactory]) -> StreamTranslatorFactory:
    if len(factories) == 1:
        return factories[0]
    return lambda endpoint, context: ChainedTranslator([factory(endpoint, context) for factory in factories])


class ChainedTranslator(StreamTranslator):
    """The first link reads the target's events; each next one translates what the one before
    made. The last that frames (guards only screen) decides how the stream is framed and ends, and
    what it says of errors and silence."""

    def __init__(self, links: Sequence[StreamTranslator]):
        self._links = links
        for link in links[:-1]:
            link.last = False  # the next link reads its chunks as dicts
        self._framing = next(link for link in reversed(links) if link.frames)
        self._reader = next(link for link in links if link.frames)
        self.done, self.ping = self._framing.done, self._framing.ping

    def error_frame(self, error: ProxyError) -> bytes:
        return self._framing.error_frame(error)

    def event(self, data: str) -> list[Any]:
        chunks: list[Any] = self._links[0].event(data)
        for link in self._links[1:]:
            chunks = [out for chunk in chunks for out in link.event(chunk)]
        # What the target's side says of the stream: its first link that translates (a screen
        # before it only passes the target's events on).
        reader = self._reader
        self.finished, self.complete, self.usage = reader.finished, reader.complete, reader.usage
        return chunks

    def end(self) -> list[Any]:
        chunks: list[Any] = self._links[0].end()
        for link in self._links[1:]:
            chunks = [out for chunk in chunks for out in link.event(chunk)] + link.end()
        return chunks
