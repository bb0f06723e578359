"""Strikes and bans: in memory, or in a SQLite file shared by processes and kept across restarts.

Whether an address is banned is answered from memory on every request; a SQLite store reloads
its active bans every second, so a ban made by another process holds here within a second.
Strikes only change on failed authentications, so they are counted in the store itself, where
concurrent processes add up.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mooltiproxy.core.shared_file import SharedFile

log = logging.getLogger("mooltiproxy.bans")

# Addresses whose strikes are remembered at once; the oldest are forgotten beyond it, so a flood
# of distinct addresses cannot grow memory without bound.
MAX_TRACKED_ADDRESSES = 100_000
REFRESH_SECONDS = 1.0
FOREVER = 0.0


@dataclass(frozen=True, slots=True)
class Ban:
    address: str
    since: float
    until: float  # FOREVER, or a time.time()

    def as_json(self) -> dict[str, Any]:
        return {"address": self.address, "since": self.since, "until": self.until or None}


class BanStore:
    """Bans and strikes of this process only (a ban lasts until it expires or the process ends)."""

    def __init__(self, max_tries: int, ban_seconds: float, max_tracked: int = MAX_TRACKED_ADDRESSES):
        self._max_tries = max_tries
        self._ban_seconds = ban_seconds
        self._max_tracked = max_tracked
        self._bans: dict[str, Ban] = {}
        self._strikes: OrderedDict[str, int] = OrderedDict()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def configure(self, max_tries: int, ban_seconds: float) -> None:
        """A reloaded config's settings; bans and strikes already counted stay."""
        self._max_tries = max_tries
        self._ban_seconds = ban_seconds

    def ban_of(self, address: str) -> Ban | None:
        """The address's ban while it lasts, else None."""
        ban = self._bans.get(address)
        if ban is not None and ban.until != FOREVER and ban.until <= time.time():
            del self._bans[address]
            return None
        return ban

    async def strike(self, address: str) -> bool:
        """Counts a failed authentication; True when it got the address banned."""
        strikes = self._strikes.pop(address, 0) + 1
        if strikes < self._max_tries:
            self._strikes[address] = strikes
            if len(self._strikes) > self._max_tracked:
                self._strikes.popitem(last=False)
            return False
        self._bans[address] = self._new_ban(address)
        return True

    async def bans(self) -> list[Ban]:
        return [ban for address in list(self._bans) if (ban := self.ban_of(address)) is not None]

    async def lift(self, address: str) -> bool:
        self._strikes.pop(address, None)
        return self._bans.pop(address, None) is not None

    def _new_ban(self, address: str) -> Ban:
        now = time.time()
        return Ban(address, now, now + self._ban_seconds if self._ban_seconds else FOREVER)


class SQLiteBanStore(BanStore):
    """Bans and strikes in a SQLite database: they survive restarts and are shared by processes."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS bans (address TEXT PRIMARY KEY, since REAL NOT NULL, until REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS strikes (address TEXT PRIMARY KEY, count INTEGER NOT NULL, updated REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS strikes_by_age ON strikes (updated)",
    )

    def __init__(self, path: Path, max_tries: int, ban_seconds: float, max_tracked: int = MAX_TRACKED_ADDRESSES):
        super().__init__(max_tries, ban_seconds, max_tracked)
        self._file = SharedFile(path, self.SCHEMA, "bans")
        self._refresher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._file.open()
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await self._file.close()

    async def strike(self, address: str) -> bool:
        ban = await self._file.run(lambda connection: self._strike(connection, address))
        if ban is None:
            return False
        self._bans[address] = ban
        return True

    async def bans(self) -> list[Ban]:
        await self.refresh()
        return await super().bans()

    async def lift(self, address: str) -> bool:
        lifted = await self._file.run(lambda connection: _lift(connection, address))
        self._bans.pop(address, None)
        return lifted

    async def refresh(self) -> None:
        self._bans = {ban.address: ban for ban in await self._file.run(_active_bans)}

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except sqlite3.Error as exc:
                log.error("cannot read the ban file %s: %s", self._file.path, exc)

    # ---- run in the file's thread ----
    def _strike(self, connection: sqlite3.Connection, address: str) -> Ban | None:
        now = time.time()
        with connection:  # one transaction: concurrent processes count every strike once
            connection.execute("BEGIN IMMEDIATE")
            (count,) = connection.execute(
                "INSERT INTO strikes (address, count, updated) VALUES (?, 1, ?) "
                "ON CONFLICT (address) DO UPDATE SET count = count + 1, updated = excluded.updated RETURNING count",
                (address, now),
            ).fetchone()
            if count < self._max_tries:
                connection.execute(
                    "DELETE FROM strikes WHERE address IN "
                    "(SELECT address FROM strikes ORDER BY updated DESC LIMIT -1 OFFSET ?)",
                    (self._max_tracked,),
                )
                return None
            ban = self._new_ban(address)
            connection.execute("DELETE FROM strikes WHERE address = ?", (address,))
            connection.execute(
                "INSERT OR REPLACE INTO bans (address, since, until) VALUES (?, ?, ?)", (address, ban.since, ban.until)
            )
            return ban


def _lift(connection: sqlite3.Connection, address: str) -> bool:
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("DELETE FROM strikes WHERE address = ?", (address,))
        return bool(connection.execute("DELETE FROM bans WHERE address = ?", (address,)).rowcount > 0)


def _active_bans(connection: sqlite3.Connection) -> list[Ban]:
    rows = connection.execute(
        "SELECT address, since, until FROM bans WHERE until = ? OR until > ?", (FOREVER, time.time())
    ).fetchall()
    return [Ban(*row) for row in rows]
