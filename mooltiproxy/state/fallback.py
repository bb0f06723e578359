"""A remote store (Redis) with this process's memory behind it: when the remote one fails or is too
slow, the proxy keeps serving on local state, never with a 5xx of the store's making.

A circuit breaker stops asking a dead store on every request: after a failure, calls go to local
state for `PROBE_SECONDS`, then one call probes the remote store again. The outage is logged when
it starts and when it ends, and counted. Bans made locally meanwhile are written to the remote
store when it is back. Limits, meanwhile, are counted on local state (each instance then enforces
them on its own), or refused when the operator chose to fail closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from redis.exceptions import RedisError

from mooltiproxy.core.errors import ProxyError
from mooltiproxy.state.memory import MemoryStore
from mooltiproxy.state.redis_store import RedisStore
from mooltiproxy.state.store import Admission, Ban, StateStore, StrikeResult, Usage, Window

log = logging.getLogger("mooltiproxy.state")

PROBE_SECONDS = 5.0
REFRESH_SECONDS = 0.5
T = TypeVar("T")
STORE_ERRORS = (RedisError, OSError, TimeoutError)


class WithFallback(StateStore):
    def __init__(
        self, remote: RedisStore, timeout: float, connections: int, fail_closed: bool, on_error: Callable[[], None]
    ):
        self.name = remote.name
        self._remote = remote
        # As many calls at once as the pool has connections: a burst waits its turn (back-pressure),
        # and only the store's own slowness or failure opens the breaker.
        self._connections = asyncio.Semaphore(connections)
        self._local = MemoryStore()
        self._timeout = timeout
        self._fail_closed = fail_closed
        self._on_error = on_error
        self._down_until = 0.0  # the breaker is open until then
        self._outage_started: float | None = None
        self._local_bans: list[Ban] = []  # made during an outage, written to the remote store after
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        try:
            await self._call(self._remote.refresh)
        except _Unavailable:
            log.warning("state store %s is unreachable at start: serving on local state until it is back", self.url)
        self._tasks = [asyncio.create_task(self._refresh_forever()), asyncio.create_task(self._follow_bans_forever())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self._remote.close()

    @property
    def url(self) -> str:
        return self._remote.url.split("@")[-1]  # without credentials

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """The remote operation, unless the breaker is open; _Unavailable when it fails."""
        if time.monotonic() < self._down_until:
            raise _Unavailable
        async with self._connections:
            if time.monotonic() < self._down_until:  # it failed while this call waited
                raise _Unavailable
            try:
                async with asyncio.timeout(self._timeout):
                    result = await operation()
            except STORE_ERRORS as exc:
                self._failed(exc)
                raise _Unavailable from None
        if self._outage_started is not None:
            await self._recovered()
        return result

    def _failed(self, exc: BaseException) -> None:
        self._on_error()
        self._down_until = time.monotonic() + PROBE_SECONDS
        if self._outage_started is None:
            self._outage_started = time.monotonic()
            log.error(
                "state store %s failed (%s): serving on local state, trying it again every %.0f s",
                self.url,
                type(exc).__name__,
                PROBE_SECONDS,
            )

    async def _recovered(self) -> None:
        assert self._outage_started is not None
        seconds = time.monotonic() - self._outage_started
        self._outage_started = None
        bans, self._local_bans = self._local_bans, []
        try:
            await self._remote.add_bans(ban for ban in bans if ban.active(time.time()))
        except STORE_ERRORS as exc:
            self._failed(exc)
            self._local_bans.extend(bans)
            return
        log.warning("state store %s is back after %.1f s; %d local bans written to it", self.url, seconds, len(bans))

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self._call(self._remote.refresh)
            except _Unavailable:
                pass

    async def _follow_bans_forever(self) -> None:
        while True:
            try:
                await self._remote.follow_bans()
            except STORE_ERRORS:
                pass  # the refresher notices the outage; bans are followed again once it is over
            await asyncio.sleep(PROBE_SECONDS)

    def ban_of(self, address: str) -> Ban | None:
        return self._remote.ban_of(address) or self._local.ban_of(address)

    async def strike(self, address: str, max_tries: int, ban_seconds: float) -> StrikeResult:
        try:
            return await self._call(lambda: self._remote.strike(address, max_tries, ban_seconds))
        except _Unavailable:
            result = await self._local.strike(address, max_tries, ban_seconds)
            if result.new_ban is not None:
                self._local_bans.append(result.new_ban)
            return result

    async def _either(self, remote: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        """The remote store's answer, else local state's."""
        try:
            return await self._call(remote)
        except _Unavailable:
            return await local()

    async def _both(self, remote: Callable[[], Awaitable[Any]], local: Callable[[], Awaitable[Any]]) -> bool:
        """Done on local state and, when it can be reached, on the remote store: whether either did it."""
        done_here = bool(await local())
        try:
            return bool(await self._call(remote)) or done_here
        except _Unavailable:
            return done_here

    async def bans(self) -> list[Ban]:
        remote = await self._either(self._remote.bans, _nothing)
        known = {ban.address for ban in remote}
        return remote + [ban for ban in await self._local.bans() if ban.address not in known]

    async def lift(self, address: str) -> bool:
        return await self._both(lambda: self._remote.lift(address), lambda: self._local.lift(address))

    async def admit(self, windows: Sequence[Window]) -> Admission:
        return await self._either(lambda: self._remote.admit(windows), lambda: self._admit_locally(windows))

    async def _admit_locally(self, windows: Sequence[Window]) -> Admission:
        if self._fail_closed:
            raise ProxyError(
                429,
                "Rate limits cannot be checked right now; try again shortly",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(int(PROBE_SECONDS)), "retry-after-ms": str(int(PROBE_SECONDS * 1000))},
            )
        return await self._local.admit(windows)

    async def charge(self, keys: Iterable[str], cost: int) -> None:
        charged = list(keys)
        await self._either(lambda: self._remote.charge(charged, cost), lambda: self._local.charge(charged, cost))

    async def usage(self, windows: Sequence[Window]) -> list[Usage]:
        return await self._either(lambda: self._remote.usage(windows), lambda: self._local.usage(windows))

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> bool:
        return await self._either(
            lambda: self._remote.acquire(key, limit, lease, ttl), lambda: self._local.acquire(key, limit, lease, ttl)
        )

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> None:
        await self._both(lambda: self._remote.renew(leases, ttl), lambda: self._local.renew(leases, ttl))

    async def release(self, key: str, lease: str) -> None:
        # Unreachable, the remote lease ends with its time to live.
        await self._both(lambda: self._remote.release(key, lease), lambda: self._local.release(key, lease))

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._either(lambda: self._remote.put(key, value, ttl), lambda: self._local.put(key, value, ttl))

    async def get(self, key: str) -> bytes | None:
        value = await self._either(lambda: self._remote.get(key), _nothing_kept)
        return value if value is not None else await self._local.get(key)

    async def delete(self, key: str) -> bool:
        return await self._both(lambda: self._remote.delete(key), lambda: self._local.delete(key))

    async def slots_taken(self, key: str) -> int:
        return await self._either(lambda: self._remote.slots_taken(key), lambda: self._local.slots_taken(key))


async def _nothing() -> list[Ban]:
    return []


async def _nothing_kept() -> bytes | None:
    return None


class _Unavailable(Exception):
    """The remote store cannot be used now."""
