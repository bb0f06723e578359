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
from typing import TypeVar

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
    def __init__(self, remote: RedisStore, timeout: float, fail_closed: bool, on_error: Callable[[], None]):
        self.name = remote.name
        self._remote = remote
        self._local = MemoryStore()
        self._timeout = timeout
        self._fail_closed = fail_closed
        self._on_error = on_error
        self._down_until = 0.0  # the breaker is open until then
        self._outage_started: float | None = None
        self._local_bans: list[Ban] = []  # made during an outage, written to the remote store after
        self._refresher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        try:
            await self._call(self._remote.refresh)
        except _Unavailable:
            log.warning("state store %s is unreachable at start: serving on local state until it is back", self.url)
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await self._remote.close()

    @property
    def url(self) -> str:
        return self._remote.url.split("@")[-1]  # without credentials

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """The remote operation, unless the breaker is open; _Unavailable when it fails."""
        if time.monotonic() < self._down_until:
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

    async def bans(self) -> list[Ban]:
        try:
            remote = await self._call(self._remote.bans)
        except _Unavailable:
            remote = []
        local = [ban for ban in await self._local.bans() if ban.address not in {b.address for b in remote}]
        return remote + local

    async def lift(self, address: str) -> bool:
        lifted_here = await self._local.lift(address)
        try:
            return await self._call(lambda: self._remote.lift(address)) or lifted_here
        except _Unavailable:
            return lifted_here

    async def admit(self, windows: Sequence[Window]) -> Admission:
        try:
            return await self._call(lambda: self._remote.admit(windows))
        except _Unavailable:
            if self._fail_closed:
                raise ProxyError(
                    429,
                    "Rate limits cannot be checked right now; try again shortly",
                    code="rate_limit_exceeded",
                    headers={"Retry-After": str(int(PROBE_SECONDS)), "retry-after-ms": str(int(PROBE_SECONDS * 1000))},
                ) from None
            return await self._local.admit(windows)

    async def charge(self, keys: Iterable[str], cost: int) -> None:
        keys = list(keys)
        try:
            await self._call(lambda: self._remote.charge(keys, cost))
        except _Unavailable:
            await self._local.charge(keys, cost)

    async def usage(self, windows: Sequence[Window]) -> list[Usage]:
        try:
            return await self._call(lambda: self._remote.usage(windows))
        except _Unavailable:
            return await self._local.usage(windows)

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> bool:
        try:
            return await self._call(lambda: self._remote.acquire(key, limit, lease, ttl))
        except _Unavailable:
            return await self._local.acquire(key, limit, lease, ttl)

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> None:
        await self._local.renew(leases, ttl)
        try:
            await self._call(lambda: self._remote.renew(leases, ttl))
        except _Unavailable:
            pass

    async def release(self, key: str, lease: str) -> None:
        await self._local.release(key, lease)
        try:
            await self._call(lambda: self._remote.release(key, lease))
        except _Unavailable:
            pass  # the lease's time to live ends it

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self._call(lambda: self._remote.put(key, value, ttl))
        except _Unavailable:
            await self._local.put(key, value, ttl)

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._call(lambda: self._remote.get(key))
        except _Unavailable:
            value = None
        return value if value is not None else await self._local.get(key)

    async def delete(self, key: str) -> bool:
        deleted_here = await self._local.delete(key)
        try:
            return await self._call(lambda: self._remote.delete(key)) or deleted_here
        except _Unavailable:
            return deleted_here

    async def slots_taken(self, key: str) -> int:
        try:
            return await self._call(lambda: self._remote.slots_taken(key))
        except _Unavailable:
            return await self._local.slots_taken(key)


class _Unavailable(Exception):
    """The remote store cannot be used now."""
