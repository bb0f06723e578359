"""What each target says of its model, asked at each backend's path in turn and read by it (the
first that reads the answer wins). A target's `context_length` in the config wins.

Asked at start (and after a reload) and kept until the next reload; a target that could not be asked
is asked again a minute later, in the background: requests never wait for a target's answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import aiohttp
from yarl import URL

from mooltiproxy.config.settings import UNKNOWN, Target, TargetInfo
from mooltiproxy.core.accelerators import loads
from mooltiproxy.forwarding.upstream import UPSTREAM_ERRORS, UpstreamPool, tls_context

log = logging.getLogger("mooltiproxy.targets")

PROBE_TIMEOUT_SECONDS = 3.0
RETRY_SECONDS = 60.0


# Where a kind of target says what it serves, and how its answer there is read.
InfoReader = tuple[str, Callable[[Any], TargetInfo | None]]


class TargetInfos:
    def __init__(
        self,
        targets: Mapping[str, Target],
        pool: UpstreamPool,
        authorizations: Mapping[str, str | None],
        readers: Sequence[InfoReader],
    ):
        self._targets = targets
        self._readers = readers
        self._pool = pool
        self._authorizations = authorizations
        self._known: dict[str, asyncio.Task[TargetInfo]] = {}
        self._retry_after: dict[str, float] = {}
        self._asked_at: dict[str, float] = {}
        self._answered: dict[str, TargetInfo] = {}  # the last answer of each, while it is asked again

    async def of(self, name: str) -> TargetInfo:
        """What the target says, waiting for its answer when it is being asked."""
        task = self._asking(name, None)
        return task.result() if task.done() else await asyncio.shield(task)

    def last_known(self, name: str, max_age: float | None = None) -> TargetInfo:
        """What the target said when last asked, at once: requests and readiness probes wait for
        no target. It is asked again, for next time, when that answer is older than `max_age`
        seconds (or, with no `max_age`, when it could not be asked a minute ago)."""
        task = self._asking(name, max_age)
        return task.result() if task.done() else self._answered.get(name, UNKNOWN)

    def _asking(self, name: str, max_age: float | None) -> asyncio.Task[TargetInfo]:
        task = self._known.get(name)
        if task is None or self._worth_asking_again(name, task, max_age):
            self._asked_at[name] = now = time.monotonic()
            self._retry_after[name] = now + RETRY_SECONDS
            task = self._known[name] = asyncio.ensure_future(self._learn(self._targets[name]))
        return task

    def _worth_asking_again(self, name: str, task: asyncio.Task[TargetInfo], max_age: float | None) -> bool:
        if not task.done():
            return False
        now = time.monotonic()
        if max_age is not None and now - self._asked_at[name] > max_age:
            return True
        return task.result().source == "nothing" and now > self._retry_after[name]

    async def announce(self) -> dict[str, TargetInfo]:
        """What each target says, and one line per target saying it (or that it could not be asked)."""
        infos = dict(zip(self._targets, await asyncio.gather(*map(self.of, self._targets)), strict=True))
        for name, info in infos.items():
            if not info.reachable:
                log.warning("target %s: unreachable at start", name)
            elif info.source == "nothing":
                paths = ", ".join(path for path, _ in self._readers)
                log.info("target %s: reachable; its model and limits unknown (nothing at %s)", name, paths)
            else:
                context = f"{info.context_length} tokens" if info.context_length else "not said"
                log.info("target %s: model %s, context %s (from %s)", name, info.model_id or "-", context, info.source)
        return infos

    async def _learn(self, target: Target) -> TargetInfo:
        # A session of its own, whose connections close after each answer: the pool's carry only
        # clients' requests.
        connector = aiohttp.TCPConnector(force_close=True, ssl=tls_context(target.verify))
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS)
        answered: dict[str, bytes | None] = {}  # by path: each is asked once, whatever reads it
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            info = None
            for path, read in self._readers:
                if path not in answered:
                    answered[path] = await self._ask(session, target, path)
                info = _read(read, answered[path])
                if info is not None or answered[path] is None:  # a target that answers nothing is asked once
                    break
        info = replace(info or UNKNOWN, reachable=any(body is not None for body in answered.values()))
        if target.context_length is not None:
            info = replace(info, context_length=target.context_length, source="the config")
        self._answered[target.name] = info
        return info

    async def _ask(self, session: aiohttp.ClientSession, target: Target, path: str) -> bytes | None:
        """The body of the target's 200 answer to GET `path` (b"" for another status), or None when
        it answered nothing."""
        authorization = self._authorizations.get(target.name)
        headers = {"Authorization": authorization} if authorization else {}
        url = self._pool.balancer(target.name).pick() + path
        try:
            async with session.get(URL(url, encoded=True), headers=headers, allow_redirects=False) as answer:
                return await answer.read() if answer.status == 200 else b""
        except (*UPSTREAM_ERRORS, TimeoutError):
            return None


def _read(read: Callable[[Any], TargetInfo | None], body: bytes | None) -> TargetInfo | None:
    """What a backend reads in an answer; None for an answer that is not its kind."""
    if not body:
        return None
    try:
        return read(loads(body))
    except (ValueError, TypeError, AttributeError, KeyError, IndexError):
        return None
