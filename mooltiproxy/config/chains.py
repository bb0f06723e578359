"""Mapper chains (`in: [a, b]`): the links composed into one mapper, and their stream translators
into one translator, each link feeding the next."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mooltiproxy.config.settings import Endpoint, Mapper, StreamTranslatorFactory


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


class ChainedTranslator:
    """The first link reads the target's events; each next one translates what the one before
    made. The last decides how the stream is framed and ends."""

    def __init__(self, links: Sequence[Any]):
        self._links = links
        last = links[-1]
        for name in ("done", "error_frame", "ping"):  # what the client's API says of ends, errors, silence
            if hasattr(last, name):
                setattr(self, name, getattr(last, name))

    @property
    def finished(self) -> bool:
        return bool(self._links[0].finished)

    @property
    def complete(self) -> bool:
        return bool(self._links[0].complete)

    @property
    def usage(self) -> Any:
        return getattr(self._links[0], "usage", None)

    def event(self, data: str) -> list[Any]:
        chunks: list[Any] = self._links[0].event(data)
        for link in self._links[1:]:
            chunks = [out for chunk in chunks for out in link.event(chunk)]
        return chunks

    def end(self) -> list[Any]:
        chunks: list[Any] = self._links[0].end()
        for link in self._links[1:]:
            chunks = [out for chunk in chunks for out in link.event(chunk)] + link.end()
        return chunks
