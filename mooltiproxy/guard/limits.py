"""Rate limits per client key and per target: requests and tokens per minute over a sliding window,
and requests at once.

Requests are counted when they arrive. Tokens are checked when a request arrives (is the window
already spent?) and charged when its answer (or its stream) ends, from the usage the target
reported; nothing is reserved up front, so a key may overshoot by the requests already in flight.
A slot of `max_concurrent` is a lease with a time to live, renewed while its request lives, so an
instance that dies mid-stream leaks no slot for long.

The decision (state.store.Admission) is kept apart from how it is written: `rate_limit_error` and
`openai_headers` write it as OpenAI does; another API's front writes the same decision its way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

from mooltiproxy.config.settings import Limits, Target
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.metrics import Metrics
from mooltiproxy.state.store import Admission, StateStore, Usage, Window, lease_id

log = logging.getLogger("mooltiproxy.limits")

CLIENT_KEYS = "client:"  # the prefix of a client key's windows in the state store
LEASE_SECONDS = 30.0
RENEW_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Grant:
    """What an admitted request holds: the windows its tokens are charged to, its leases, and the
    usage of its client's windows (for the rate-limit headers of its answer)."""

    token_keys: tuple[str, ...]
    leases: tuple[tuple[str, str], ...]
    client_usage: tuple[Usage, ...]


class Limiter:
    """Outlives reloads: the leases it renews belong to requests in flight."""

    def __init__(self, store: StateStore, metrics: Metrics):
        self._store = store
        self._metrics = metrics
        self._live: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_forever())

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def admit(self, client: str, limits: Limits, target: Target) -> Grant | None:
        """The grant of a request within its limits, or a 429 naming the limit; None (and nothing
        asked of the store) when no limit applies."""
        if not limits and not target.limits:
            return None
        owners = (
            (f"{CLIENT_KEYS}{client}", f"client '{client}'", limits),
            (f"target:{target.name}", f"target '{target.name}'", target.limits),
        )
        leases: list[tuple[str, str]] = []
        try:
            for key, owner, owner_limits in owners:
                if owner_limits.max_concurrent:
                    lease = (f"{key}:concurrent", lease_id())
                    if not await self._store.acquire(lease[0], owner_limits.max_concurrent, lease[1], LEASE_SECONDS):
                        self._metrics.add("mooltiproxy_rate_limited_total", client=client, limit="max_concurrent")
                        raise _too_many_at_once(owner, owner_limits.max_concurrent)
                    leases.append(lease)
            windows = [window for key, owner, owner_limits in owners for window in _windows(key, owner, owner_limits)]
            admission = await self._store.admit(windows) if windows else Admission(())
            if admission.exceeded is not None:
                self._metrics.add(
                    "mooltiproxy_rate_limited_total",
                    client=client,
                    limit=f"{admission.exceeded.window.name}_per_minute",
                )
                raise rate_limit_error(admission.exceeded, admission.retry_after)
        except BaseException:
            self._release(leases)
            raise
        self._live.update(leases)
        client_usage = tuple(
            usage for usage in admission.usages if usage.window.key.startswith(f"{CLIENT_KEYS}{client}:")
        )
        token_keys = tuple(window.key for window in windows if window.name == "tokens")
        return Grant(token_keys, tuple(leases), client_usage)

    def finish(self, grant: Grant, tokens: int) -> None:
        """The request has ended (answered, failed or cut): its tokens are charged, its slots freed.
        Done in a task of its own, so that a request cancelled by its client still gets it done."""
        self._live.difference_update(grant.leases)
        task = asyncio.get_running_loop().create_task(self._finish(grant, tokens))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, grant: Grant, tokens: int) -> None:
        if tokens and grant.token_keys:
            await self._store.charge(grant.token_keys, tokens)
        for key, lease in grant.leases:
            await self._store.release(key, lease)

    def _release(self, leases: Iterable[tuple[str, str]]) -> None:
        leases = list(leases)
        if leases:
            self.finish(Grant((), tuple(leases), ()), 0)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            if self._live:
                with contextlib.suppress(Exception):  # a store that fails has said so itself
                    await self._store.renew(list(self._live), LEASE_SECONDS)

    async def usage(self, client: str, limits: Limits) -> dict[str, object]:
        """What a client key has used of its limits now (the admin API's view)."""
        key = f"{CLIENT_KEYS}{client}"
        report: dict[str, object] = {}
        usages = await self._store.usage(_windows(key, f"client '{client}'", limits))
        for usage in usages:
            report[f"{usage.window.name}_per_minute"] = {
                "limit": usage.window.limit,
                "used": usage.used,
                "reset_seconds": round(usage.reset_seconds, 3),
            }
        if limits.max_concurrent:
            taken = await self._store.slots_taken(f"{key}:concurrent")
            report["max_concurrent"] = {"limit": limits.max_concurrent, "in_flight": taken}
        return report


def _windows(key: str, owner: str, limits: Limits) -> list[Window]:
    windows = []
    if limits.requests_per_minute:
        windows.append(Window(f"{key}:requests", limits.requests_per_minute, 1, "requests", owner))
    if limits.tokens_per_minute:
        windows.append(Window(f"{key}:tokens", limits.tokens_per_minute, 0, "tokens", owner))
    return windows


def rate_limit_error(exceeded: Usage, retry_after: float) -> ProxyError:
    """OpenAI's 429, with the two headers openai-python's retry reads, and, when the client's own
    window is the one spent, its x-ratelimit-* headers, as OpenAI sends them on a 429 too."""
    window = exceeded.window
    seconds = max(1, math.ceil(retry_after))
    headers = {"Retry-After": str(seconds), "retry-after-ms": str(max(1, math.ceil(retry_after * 1000)))}
    if window.key.startswith(CLIENT_KEYS):
        headers.update(openai_headers([exceeded]))
    return ProxyError(
        429,
        f"Rate limit reached for {window.owner} on {window.name} per minute: limit {window.limit}, "
        f"used {exceeded.used}. Please try again in {seconds}s.",
        code="rate_limit_exceeded",
        headers=headers,
    )


def _too_many_at_once(owner: str, limit: int) -> ProxyError:
    return ProxyError(
        429,
        f"Rate limit reached for {owner}: at most {limit} requests at once. Please try again in 1s.",
        code="rate_limit_exceeded",
        headers={"Retry-After": "1", "retry-after-ms": "1000"},
    )


def openai_headers(usages: Iterable[Usage]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for a client's windows."""
    headers = {}
    for usage in usages:
        name, limit = usage.window.name, usage.window.limit
        headers[f"x-ratelimit-limit-{name}"] = str(limit)
        headers[f"x-ratelimit-remaining-{name}"] = str(max(0, limit - usage.used))
        headers[f"x-ratelimit-reset-{name}"] = _duration(usage.reset_seconds)
    return headers


def _duration(seconds: float) -> str:
    """As OpenAI writes it: `1s`, `6m0s`."""
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"
