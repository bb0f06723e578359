"""The state in Redis, shared by proxy instances on many machines.

Each decision is one Lua script, run atomically by Redis with Redis's own clock, so instances whose
clocks differ still agree. The bans every request is checked against are this instance's copy: the
script that bans publishes the ban, which every instance hears at once, and the copy is read again
twice a second (one HGETALL) in case a message was missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis

from mooltiproxy.state.store import (
    WINDOW_SECONDS,
    Admission,
    Ban,
    StateStore,
    StrikeResult,
    Usage,
    Window,
    lease_id,
    now,
)

STRIKES_TTL = 24 * 3600  # strikes not followed by another within a day are forgotten
_PREFIX = "mooltiproxy:"
_BANS = _PREFIX + "bans"
_BAN_NEWS = _PREFIX + "ban-news"  # "<address> <since> <until>" for a ban, "<address>" for a lift

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1e6 "
# KEYS: bans, strikes of the address, ban news; ARGV: address, max_tries, ban_seconds, strikes ttl.
# Returns {0} (struck), {1, since, until} (already banned), {2, since, until} (banned now).
_STRIKE = (
    _NOW
    + """
local ban = redis.call('HGET', KEYS[1], ARGV[1])
if ban then
  local since, ending = string.match(ban, '([^:]+):([^:]+)')
  if tonumber(ending) == 0 or tonumber(ending) > now then return {1, since, ending} end
end
local count = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if count < tonumber(ARGV[2]) then return {0} end
redis.call('DEL', KEYS[2])
local ending = 0
if tonumber(ARGV[3]) > 0 then ending = now + tonumber(ARGV[3]) end
local since, until_ = string.format('%.6f', now), string.format('%.6f', ending)
redis.call('HSET', KEYS[1], ARGV[1], since .. ':' .. until_)
redis.call('PUBLISH', KEYS[3], ARGV[1] .. ' ' .. since .. ' ' .. until_)
return {2, since, until_}
"""
)
# A window is a sorted set of its events (members "<id>:<cost>", scores their times) and the running
# total of their costs, so that a decision reads one number; the events themselves are read only
# as far as needed: the oldest, or on a refusal as many as must leave before the request fits.
_WINDOW = """
local function cost_of(member) return tonumber(string.match(member, ':(%d+)$')) end
local function window(key, now)
  local total = key .. ':total'
  local expired = redis.call('ZRANGEBYSCORE', key, '-inf', now - WINDOW)
  if #expired > 0 then
    local gone = 0
    for _, member in ipairs(expired) do gone = gone + cost_of(member) end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - WINDOW)
    redis.call('DECRBY', total, gone)
  end
  return tonumber(redis.call('GET', total) or '0')
end
local function reset(key, now)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #first == 0 then return 0 end
  return tonumber(first[2]) + WINDOW - now
end
local function fits(used, cost, limit)
  if cost > 0 then return used + cost <= limit end
  return used < limit
end
local function retry_after(key, used, cost, limit, now)
  local start = 0
  while true do
    local batch = redis.call('ZRANGE', key, start, start + 99, 'WITHSCORES')
    if #batch == 0 then return WINDOW end
    for j = 1, #batch, 2 do
      used = used - cost_of(batch[j])
      if fits(used, cost, limit) then return tonumber(batch[j + 1]) + WINDOW - now end
    end
    start = start + 100
  end
end
local function add(key, now, member, cost)
  redis.call('ZADD', key, now, member)
  redis.call('INCRBY', key .. ':total', cost)
  redis.call('EXPIRE', key, WINDOW + 1)
  redis.call('EXPIRE', key .. ':total', WINDOW + 1)
end
"""
# KEYS: the windows; ARGV: limit and cost of each, then the request's id.
# Returns {1, used, reset, ...} per window when admitted (and counted), else {0, index, used, reset, retry}.
_ADMIT = (
    _NOW
    + _WINDOW
    + """
local usages = {1}
for i, key in ipairs(KEYS) do
  local limit, cost = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local used = window(key, now)
  local until_reset = reset(key, now)
  if not fits(used, cost, limit) then
    local retry = retry_after(key, used, cost, limit, now)
    return {0, i, tostring(used), string.format('%.3f', until_reset), string.format('%.3f', retry)}
  end
  if used == 0 and cost > 0 then until_reset = WINDOW end
  usages[#usages + 1] = tostring(used + cost)
  usages[#usages + 1] = string.format('%.3f', until_reset)
end
for i, key in ipairs(KEYS) do
  local cost = tonumber(ARGV[2 * i])
  if cost > 0 then add(key, now, ARGV[#ARGV] .. ':' .. i .. ':' .. cost, cost) end
end
return usages
"""
)
# KEYS: windows; ARGV: cost, id.
_CHARGE = (
    _NOW
    + _WINDOW
    + """
for i, key in ipairs(KEYS) do
  window(key, now)
  add(key, now, ARGV[2] .. ':' .. i .. ':' .. ARGV[1], tonumber(ARGV[1]))
end
return 1
"""
)
# KEYS: windows. Returns used, reset of each.
_USAGE = (
    _NOW
    + _WINDOW
    + """
local out = {}
for i, key in ipairs(KEYS) do
  out[#out + 1] = tostring(window(key, now))
  out[#out + 1] = string.format('%.3f', reset(key, now))
end
return out
"""
)
# KEYS: the leases of a limit; ARGV: limit, lease, ttl.
_ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return 1
"""
)
# KEYS: lease sets; ARGV: ttl, then the lease in each.
_RENEW = (
    _NOW
    + """
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + tonumber(ARGV[1]), ARGV[i + 1])
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[1])) + 1)
end
return 1
"""
)
_SLOTS = _NOW + "return redis.call('ZCOUNT', KEYS[1], now, '+inf')"


def _scripts() -> dict[str, str]:
    window = str(int(WINDOW_SECONDS))
    sources = {"strike": _STRIKE, "admit": _ADMIT, "charge": _CHARGE, "usage": _USAGE}
    sources.update(acquire=_ACQUIRE, renew=_RENEW, slots=_SLOTS)
    return {name: source.replace("WINDOW", window) for name, source in sources.items()}


class RedisStore(StateStore):
    name = "redis"

    def __init__(self, url: str, password: str | None, timeout: float, connections: int):
        self.url = url
        # Blocking: a full pool makes a caller wait its turn rather than fail (redis-py's default
        # pool raises MaxConnectionsError). One connection more than the callers get, for ban news.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=connections + 1,
            timeout=None,
            password=password,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self._client = aioredis.Redis.from_pool(pool)
        self._scripts = {name: self._client.register_script(source) for name, source in _scripts().items()}
        self._bans: dict[str, Ban] = {}

    async def close(self) -> None:
        await self._client.aclose()

    async def follow_bans(self) -> None:
        """This instance's copy of the bans kept as other instances ban and lift; returns when the
        connection fails."""
        async with self._client.pubsub(ignore_subscribe_messages=True) as news:
            await news.subscribe(_BAN_NEWS)
            await self.refresh()  # what was missed before listening
            async for message in news.listen():
                address, *times = str(message["data"]).split(" ")
                if times:
                    self._bans[address] = Ban(address, float(times[0]), float(times[1]))
                else:
                    self._bans.pop(address, None)

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[script](keys=list(keys), args=list(args))

    def ban_of(self, address: str) -> Ban | None:
        ban = self._bans.get(address)
        return ban if ban is not None and ban.active(now()) else None

    async def refresh(self) -> None:
        """This instance's copy of the bans, read again."""
        self._bans = {ban.address: ban for ban in await self.bans()}

    async def strike(self, address: str, max_tries: int, ban_seconds: float) -> StrikeResult:
        args = (address, max_tries, ban_seconds, STRIKES_TTL)
        result = await self._run("strike", (_BANS, f"{_PREFIX}strikes:{address}", _BAN_NEWS), args)
        if result[0] == 0:
            return StrikeResult(None, None)
        ban = Ban(address, float(result[1]), float(result[2]))
        self._bans[address] = ban
        return StrikeResult(ban, None) if result[0] == 1 else StrikeResult(None, ban)

    async def bans(self) -> list[Ban]:
        at = now()
        active: list[Ban] = []
        expired: list[Ban] = []
        for address, value in (await self._client.hgetall(_BANS)).items():
            since, until = str(value).split(":")
            ban = Ban(str(address), float(since), float(until))
            (active if ban.active(at) else expired).append(ban)
        if expired:
            await self._client.hdel(_BANS, *(ban.address for ban in expired))
        return active

    async def add_bans(self, bans: Iterable[Ban]) -> None:
        """Bans made elsewhere (on local state, while Redis was away), written here."""
        mapping: dict[Any, Any] = {ban.address: f"{ban.since:.6f}:{ban.until:.6f}" for ban in bans}
        if mapping:
            await self._client.hset(_BANS, mapping=mapping)

    async def lift(self, address: str) -> bool:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hdel(_BANS, address)
            pipe.delete(f"{_PREFIX}strikes:{address}")
            pipe.publish(_BAN_NEWS, address)
            lifted, _, _ = await pipe.execute()
        self._bans.pop(address, None)
        return bool(lifted)

    async def admit(self, windows: Sequence[Window]) -> Admission:
        args = [value for window in windows for value in (window.limit, window.cost)]
        result = await self._run("admit", [_window_key(window.key) for window in windows], [*args, lease_id()])
        if result[0] == 0:
            index, used, reset, retry = int(result[1]) - 1, int(result[2]), float(result[3]), float(result[4])
            usages = tuple(Usage(window, 0, 0.0) for window in windows[:index])
            return Admission(usages, Usage(windows[index], used, reset), retry)
        pairs = result[1:]
        return Admission(
            tuple(Usage(window, int(pairs[2 * i]), float(pairs[2 * i + 1])) for i, window in enumerate(windows))
        )

    async def charge(self, keys: Iterable[str], cost: int) -> None:
        await self._run("charge", [_window_key(key) for key in keys], [cost, lease_id()])

    async def usage(self, windows: Sequence[Window]) -> list[Usage]:
        result = await self._run("usage", [_window_key(window.key) for window in windows], [])
        return [Usage(window, int(result[2 * i]), float(result[2 * i + 1])) for i, window in enumerate(windows)]

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> bool:
        return bool(await self._run("acquire", [_lease_key(key)], [limit, lease, ttl]))

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> None:
        if leases:
            await self._run("renew", [_lease_key(key) for key, _ in leases], [ttl, *(lease for _, lease in leases)])

    async def release(self, key: str, lease: str) -> None:
        await self._client.zrem(_lease_key(key), lease)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._client.set(f"{_PREFIX}kept:{key}", value.decode(), px=max(1, int(ttl * 1000)))

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(f"{_PREFIX}kept:{key}")
        return str(value).encode() if value is not None else None

    async def delete(self, key: str) -> bool:
        return bool(await self._client.delete(f"{_PREFIX}kept:{key}"))

    async def slots_taken(self, key: str) -> int:
        return int(await self._run("slots", [_lease_key(key)], []))


def _window_key(key: str) -> str:
    return f"{_PREFIX}window:{key}"


def _lease_key(key: str) -> str:
    return f"{_PREFIX}leases:{key}"
