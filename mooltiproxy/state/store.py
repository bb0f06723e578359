"""What the proxy keeps about callers between requests (strikes, bans, rate windows, concurrency
leases), and the decisions made on it. Every decision is one atomic step in its store, so that
`max_tries` and each limit hold exactly however many processes and machines share the store.

The decisions are written once here, in Python, for the stores that run them in-process (memory,
and SQLite inside one transaction); the Redis store runs the same steps as Lua scripts.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

WINDOW_SECONDS = 60.0  # every limit is per minute, over a sliding window
FOREVER = 0.0  # a ban's `until` when it lasts until lifted


@dataclass(frozen=True, slots=True)
class Ban:
    address: str
    since: float
    until: float  # FOREVER, or a time.time()

    def as_json(self) -> dict[str, Any]:
        return {"address": self.address, "since": self.since, "until": self.until or None}

    def active(self, now: float) -> bool:
        return self.until == FOREVER or self.until > now


def new_ban(address: str, ban_seconds: float, now: float) -> Ban:
    return Ban(address, now, now + ban_seconds if ban_seconds else FOREVER)


class StrikeResult(NamedTuple):
    already_banned: Ban | None  # the address was banned before this guess: refuse it as banned
    new_ban: Ban | None  # this guess was the max_tries-th: the address is banned from now on


@dataclass(frozen=True, slots=True)
class Window:
    """One limit to check: `key` names its sliding window in the store."""

    key: str
    limit: int
    cost: int  # what this request counts now: 1 for requests, 0 for tokens (charged after the call)
    name: str  # how messages and headers name it: "requests" or "tokens"
    owner: str  # who it limits: "client 'alice'", "target 'tgi'"


@dataclass(frozen=True, slots=True)
class Usage:
    window: Window
    used: int  # in the window, this request included when it was admitted
    reset_seconds: float  # until the oldest use counted leaves the window


@dataclass(frozen=True, slots=True)
class Admission:
    """The decision on a request's windows: admitted (and counted), or the first window it exceeds."""

    usages: tuple[Usage, ...]
    exceeded: Usage | None = None
    retry_after: float = 0.0

    @property
    def admitted(self) -> bool:
        return self.exceeded is None


class Event(NamedTuple):
    time: float
    cost: int


class WindowState(Protocol):
    """A window as its store holds it: the total of its events, kept as they come and go, and its
    events oldest first, read only as far as a decision needs (the oldest one, or on a refusal as
    many as must leave before the request fits)."""

    used: int

    def oldest(self) -> Iterable[Event]: ...


def decide(windows: Sequence[Window], states: Mapping[str, WindowState], now: float) -> Admission:
    """The admission of a request given the state of each of its windows (already pruned)."""
    usages: list[Usage] = []
    for window in windows:
        state = states[window.key]
        if not _fits(state.used, window):
            usage = Usage(window, state.used, _reset(state, now))
            return Admission(tuple(usages), usage, _retry_after(state, window, now))
        first_use = WINDOW_SECONDS if window.cost else 0.0  # this request's own use, counted now
        reset = _reset(state, now) if state.used else first_use
        usages.append(Usage(window, state.used + window.cost, reset))
    return Admission(tuple(usages))


def _fits(used: int, window: Window) -> bool:
    # Requests: room for this one; tokens: the window not spent yet (the call is charged after).
    return used + window.cost <= window.limit if window.cost else used < window.limit


def current_usage(window: Window, state: WindowState, now: float) -> Usage:
    return Usage(window, state.used, _reset(state, now))


def _reset(state: WindowState, now: float) -> float:
    oldest = next(iter(state.oldest()), None)
    return max(0.0, oldest.time + WINDOW_SECONDS - now) if oldest is not None else 0.0


def _retry_after(state: WindowState, window: Window, now: float) -> float:
    """How long until enough of the window's events have left it for this request to fit."""
    used = state.used
    for event in state.oldest():
        used -= event.cost
        if _fits(used, window):
            return max(0.0, event.time + WINDOW_SECONDS - now)
    return WINDOW_SECONDS


def lease_id() -> str:
    return uuid.uuid4().hex


class StateStore(ABC):
    """Strikes, bans, rate windows and concurrency leases, shared by every process using the store.

    `ban_of` answers from this process's view of the bans, kept fresh by the store (its own bans at
    once, the others' within a second); every other call is one atomic step in the store.
    """

    name = "memory"

    async def open(self) -> None:  # noqa: B027 (most stores have nothing to open)
        pass

    async def close(self) -> None:  # noqa: B027
        pass

    @abstractmethod
    def ban_of(self, address: str) -> Ban | None: ...

    @abstractmethod
    async def strike(self, address: str, max_tries: int, ban_seconds: float) -> StrikeResult: ...

    @abstractmethod
    async def bans(self) -> list[Ban]: ...

    @abstractmethod
    async def lift(self, address: str) -> bool: ...

    @abstractmethod
    async def admit(self, windows: Sequence[Window]) -> Admission:
        """Checks every window and, when all admit the request, counts it in each: one atomic step."""

    @abstractmethod
    async def charge(self, keys: Iterable[str], cost: int) -> None:
        """Adds a call's cost (its tokens) to windows, once the answer says what it was."""

    @abstractmethod
    async def usage(self, windows: Sequence[Window]) -> list[Usage]:
        """What each window holds now, counting nothing."""

    @abstractmethod
    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> bool:
        """Takes one of `limit` concurrent slots, as a lease that lives `ttl` seconds unless renewed."""

    @abstractmethod
    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> None: ...

    @abstractmethod
    async def release(self, key: str, lease: str) -> None: ...

    @abstractmethod
    async def slots_taken(self, key: str) -> int: ...

    @abstractmethod
    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Keeps a value (what a front stores) for `ttl` seconds."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def delete(self, key: str) -> bool: ...


def now() -> float:
    return time.time()
