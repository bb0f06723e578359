"""The state of one process, in plain dicts: the default store, and every store's fallback."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence

from mooltiproxy.state.store import (
    WINDOW_SECONDS,
    Admission,
    Ban,
    Event,
    StateStore,
    StrikeResult,
    Usage,
    Window,
    current_usage,
    decide,
    new_ban,
    now,
)

# Addresses whose strikes are remembered at once; the oldest are forgotten beyond it, so a flood
# of distinct addresses cannot grow memory without bound. Windows and leases are per client key
# and target, which the config bounds.
MAX_TRACKED_ADDRESSES = 100_000


class _Log:
    """A window's events and their running total."""

    __slots__ = ("events", "used")

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.used = 0

    def oldest(self) -> Iterable[Event]:
        return self.events

    def add(self, event: Event) -> None:
        self.events.append(event)
        self.used += event.cost

    def prune(self, at: float) -> _Log:
        events = self.events
        while events and events[0].time <= at - WINDOW_SECONDS:
            self.used -= events.popleft().cost
        return self


class MemoryStore(StateStore):
    """Each decision runs without awaiting anything, so it is atomic on the event loop."""

    def __init__(self, max_tracked: int = MAX_TRACKED_ADDRESSES):
        self._max_tracked = max_tracked
        self._bans: dict[str, Ban] = {}
        self._strikes: OrderedDict[str, int] = OrderedDict()
        self._windows: dict[str, _Log] = {}
        self._leases: dict[str, dict[str, float]] = {}  # key -> lease -> expiry
        self._values: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # key -> (expiry, value)

    def ban_of(self, address: str) -> Ban | None:
        ban = self._bans.get(address)
        if ban is not None and not ban.active(now()):
            del self._bans[address]
            return None
        return ban

    def add_ban(self, ban: Ban) -> None:
        self._bans[ban.address] = ban

    async def strike(self, address: str, max_tries: int, ban_seconds: float) -> StrikeResult:
        banned = self.ban_of(address)
        if banned is not None:
            return StrikeResult(banned, None)
        strikes = self._strikes.pop(address, 0) + 1
        if strikes < max_tries:
            self._strikes[address] = strikes
            if len(self._strikes) > self._max_tracked:
                self._strikes.popitem(last=False)
            return StrikeResult(None, None)
        ban = new_ban(address, ban_seconds, now())
        self._bans[address] = ban
        return StrikeResult(None, ban)

    async def bans(self) -> list[Ban]:
        return [ban for address in list(self._bans) if (ban := self.ban_of(address)) is not None]

    async def lift(self, address: str) -> bool:
        self._strikes.pop(address, None)
        return self._bans.pop(address, None) is not None

    def _window(self, key: str, at: float) -> _Log:
        log = self._windows.get(key)
        if log is None:
            log = self._windows[key] = _Log()
        return log.prune(at)

    async def admit(self, windows: Sequence[Window]) -> Admission:
        at = now()
        logs = {window.key: self._window(window.key, at) for window in windows}
        admission = decide(windows, logs, at)
        if admission.admitted:
            for window in windows:
                if window.cost:
                    logs[window.key].add(Event(at, window.cost))
        return admission

    async def charge(self, keys: Iterable[str], cost: int) -> None:
        at = now()
        for key in keys:
            self._window(key, at).add(Event(at, cost))

    async def usage(self, windows: Sequence[Window]) -> list[Usage]:
        at = now()
        return [current_usage(window, self._window(window.key, at), at) for window in windows]

    def _live(self, key: str) -> dict[str, float]:
        leases = self._leases.setdefault(key, {})
        at = now()
        for lease in [lease for lease, expiry in leases.items() if expiry <= at]:
            del leases[lease]
        return leases

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> bool:
        leases = self._live(key)
        if len(leases) >= limit:
            return False
        leases[lease] = now() + ttl
        return True

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> None:
        expiry = now() + ttl
        for key, lease in leases:
            if lease in self._leases.get(key, {}):
                self._leases[key][lease] = expiry

    async def release(self, key: str, lease: str) -> None:
        self._leases.get(key, {}).pop(lease, None)

    async def slots_taken(self, key: str) -> int:
        return len(self._live(key))

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self._values.pop(key, None)
        self._values[key] = (now() + ttl, value)
        while len(self._values) > self._max_tracked:
            self._values.popitem(last=False)

    async def get(self, key: str) -> bytes | None:
        kept = self._values.get(key)
        if kept is None or kept[0] <= now():
            self._values.pop(key, None)
            return None
        return kept[1]

    async def delete(self, key: str) -> bool:
        return await self.get(key) is not None and self._values.pop(key, None) is not None
