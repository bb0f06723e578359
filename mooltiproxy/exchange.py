"""One request to a target, opened for relaying or read whole (several in parallel for a fan-out)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from .errors import ProxyError
from .settings import Target
from .upstream import send, upstream_failures


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class Exchange:
    def __init__(self, session: aiohttp.ClientSession, target: Target, method: str, url: str, headers: CIMultiDict):
        self._session = session
        self.target = target
        self._method = method
        self._url = url
        self._headers = headers

    async def open(self, body: bytes | None, *, decompress: bool = False) -> aiohttp.ClientResponse:
        """The response with its body unread and still encoded; the caller releases it."""
        return await send(
            self._session, self.target, self._method, self._url, self._headers, body, decompress=decompress
        )

    async def read(self, body: bytes | None) -> Answer:
        upstream = await self.open(body, decompress=True)
        try:
            with upstream_failures(self.target):
                return Answer(upstream.status, upstream.headers, await upstream.read())
        finally:
            upstream.release()

    async def read_all(self, bodies: list[bytes | None]) -> list[Answer]:
        """Every answer, in order; the first failure cancels the other requests."""
        if len(bodies) == 1:
            return [await self.read(bodies[0])]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self.read(body)) for body in bodies]
        except* ProxyError as failures:
            raise failures.exceptions[0] from None
        return [task.result() for task in tasks]
