"""One request to a target: its URLs balanced, retried on failures, opened for relaying or read
whole (several in parallel for a fan-out)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

from mooltiproxy.config.settings import Target
from mooltiproxy.core.errors import ProxyError, shown_url
from mooltiproxy.forwarding.balancer import Balancer
from mooltiproxy.forwarding.upstream import UPSTREAM_ERRORS, TargetClient, UpstreamAnswer, send, upstream_failure

# Answers worth another attempt (and, when the attempts are spent, a fallback target).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF_SECONDS = 0.1


class TargetFailed(Exception):
    """The target failed every attempt and a fallback target may take the request."""

    def __init__(self, error: ProxyError):
        super().__init__(error.message)
        self.error = error


class Answer(NamedTuple):
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class Exchange:
    def __init__(
        self,
        client: TargetClient,
        target: Target,
        balancer: Balancer,
        method: str,
        path: str,
        headers: CIMultiDict,
        *,
        can_fall_back: bool,
    ):
        self._client = client
        self.target = target
        self._balancer = balancer
        self._method = method
        self._path = path
        self._headers = headers
        self._can_fall_back = can_fall_back
        self.seconds: float | None = None  # how long the upstream took to answer
        self._last_url = ""  # the last request's URL

    @property
    def tried(self) -> str:
        """The last request sent, for error messages: "POST http://host/path" (made when one needs it)."""
        return f"{self._method} {shown_url(self._last_url)}" if self._last_url else ""

    async def open(self, body: bytes | None, *, decompress: bool = False) -> UpstreamAnswer:
        """The response with its body unread (decoded as it is read, when `decompress`); the caller
        releases it.

        Connection failures and 429 / 502 / 503 / 504 are tried again (target.retries times, with
        backoff and jitter); when the attempts are spent and a fallback exists, TargetFailed.
        """
        started = time.perf_counter()
        attempts = self.target.retries + 1
        for attempt in range(attempts):
            last = attempt + 1 == attempts
            base = self._balancer.pick()
            url = self._last_url = base + self._path
            try:
                response = await send(
                    self._client,
                    self.target,
                    self._method,
                    url,
                    self._headers,
                    body,
                    decompress=decompress,
                )
            except ProxyError as error:
                self._balancer.eject(base)
                if not last:
                    await _backoff(attempt)
                    continue
                if self._can_fall_back:
                    raise TargetFailed(error) from None
                raise
            if response.status in RETRY_STATUSES and not last:
                response.release()
                await _backoff(attempt)
                continue
            if response.status in RETRY_STATUSES and self._can_fall_back:
                response.release()
                raise TargetFailed(
                    ProxyError(response.status, f"Target '{self.target.name}' answered {response.status}")
                )
            self.seconds = time.perf_counter() - started
            return response
        raise AssertionError("unreachable")

    async def read(self, body: bytes | None) -> Answer:
        upstream = await self.open(body, decompress=True)
        try:
            answer = Answer(upstream.status, upstream.headers, await upstream.read())
        except UPSTREAM_ERRORS as error:
            raise upstream_failure(self.target, error) from None
        finally:
            upstream.release()
        return answer

    async def read_all(self, bodies: Sequence[bytes | None]) -> list[Answer]:
        """Every answer, in order; the first failure cancels the other requests."""
        started = time.perf_counter()
        if len(bodies) == 1:
            answers = [await self.read(bodies[0])]
        else:
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(self.read(body)) for body in bodies]
            except* (ProxyError, TargetFailed) as failures:
                raise failures.exceptions[0] from None
            answers = [task.result() for task in tasks]
        self.seconds = time.perf_counter() - started
        return answers


async def _backoff(attempt: int) -> None:
    # Exponential, with full jitter so that retrying clients do not come back in step.
    await asyncio.sleep(random.uniform(0, BACKOFF_SECONDS * 2**attempt))
