"""The state in a SQLite file that the processes of one machine share (`workers`, `cerbere.ban_file`).

Each decision is one IMMEDIATE transaction, so concurrent processes see each other's counts. The
bans every request is checked against are this process's copy, read again twice a second.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from mooltiproxy.core.shared_file import SharedFile
from mooltiproxy.state.memory import MAX_TRACKED_ADDRESSES
from mooltiproxy.state.store import (
    FOREVER,
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

log = logging.getLogger("mooltiproxy.state")

REFRESH_SECONDS = 0.5
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bans (address TEXT PRIMARY KEY, since REAL NOT NULL, until REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS strikes (address TEXT PRIMARY KEY, count INTEGER NOT NULL, updated REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS strikes_by_age ON strikes (updated)",
    "CREATE TABLE IF NOT EXISTS events (key TEXT NOT NULL, time REAL NOT NULL, cost INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_by_key ON events (key, time)",
    "CREATE TABLE IF NOT EXISTS totals (key TEXT PRIMARY KEY, used INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS kept (key TEXT PRIMARY KEY, value BLOB NOT NULL, expiry REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS leases (key TEXT NOT NULL, lease TEXT NOT NULL, expiry REAL NOT NULL,"
    " PRIMARY KEY (key, lease))",
)


class SQLiteStore(StateStore):
    name = "sqlite"

    def __init__(self, path: Path, max_tracked: int = MAX_TRACKED_ADDRESSES):
        self.path = path
        self._file = SharedFile(path, SCHEMA, "state")
        self._max_tracked = max_tracked
        self._bans: dict[str, Ban] = {}
        self._refresher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._file.open()
        await self._refresh()
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await self._file.close()

    def ban_of(self, address: str) -> Ban | None:
        ban = self._bans.get(address)
        return ban if ban is not None and ban.active(now()) else None

    async def _refresh(self) -> None:
        self._bans = {ban.address: ban for ban in await self._file.run(_active_bans)}

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self._refresh()
            except sqlite3.Error as exc:
                log.error("cannot read the state file %s: %s", self.path, exc)

    async def strike(self, address: str, max_tries: int, ban_seconds: float) -> StrikeResult:
        result = await self._file.run(lambda db: self._strike(db, address, max_tries, ban_seconds))
        ban = result.already_banned or result.new_ban
        if ban is not None:
            self._bans[address] = ban
        return result

    def _strike(self, db: sqlite3.Connection, address: str, max_tries: int, ban_seconds: float) -> StrikeResult:
        at = now()
        with db:  # one transaction: concurrent processes count every strike once
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT since, until FROM bans WHERE address = ? AND (until = ? OR until > ?)", (address, FOREVER, at)
            ).fetchone()
            if row is not None:
                return StrikeResult(Ban(address, *row), None)
            (count,) = db.execute(
                "INSERT INTO strikes (address, count, updated) VALUES (?, 1, ?) "
                "ON CONFLICT (address) DO UPDATE SET count = count + 1, updated = excluded.updated RETURNING count",
                (address, at),
            ).fetchone()
            if count < max_tries:
                db.execute(
                    "DELETE FROM strikes WHERE address IN "
                    "(SELECT address FROM strikes ORDER BY updated DESC LIMIT -1 OFFSET ?)",
                    (self._max_tracked,),
                )
                return StrikeResult(None, None)
            ban = new_ban(address, ban_seconds, at)
            db.execute("DELETE FROM strikes WHERE address = ?", (address,))
            db.execute("INSERT OR REPLACE INTO bans VALUES (?, ?, ?)", (address, ban.since, ban.until))
            return StrikeResult(None, ban)

    async def bans(self) -> list[Ban]:
        await self._refresh()
        return list(self._bans.values())

    async def lift(self, address: str) -> bool:
        lifted = await self._file.run(lambda db: _lift(db, address))
        self._bans.pop(address, None)
        return lifted

    async def admit(self, windows: Sequence[Window]) -> Admission:
        return await self._file.run(lambda db: _admit(db, windows))

    async def charge(self, keys: Iterable[str], cost: int) -> None:
        charged = list(keys)

        def add(db: sqlite3.Connection) -> None:
            at = now()
            with db:
                db.execute("BEGIN IMMEDIATE")
                for key in charged:
                    _add(db, key, at, cost)

        await self._file.run(add)

    async def usage(self, windows: Sequence[Window]) -> list[Usage]:
        def read(db: sqlite3.Connection) -> list[Usage]:
            at = now()
            with db:
                db.execute("BEGIN IMMEDIATE")
                return [current_usage(window, _window(db, window.key, at), at) for window in windows]

        return await self._file.run(read)

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> bool:
        def take(db: sqlite3.Connection) -> bool:
            at = now()
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM leases WHERE key = ? AND expiry <= ?", (key, at))
                (taken,) = db.execute("SELECT count(*) FROM leases WHERE key = ?", (key,)).fetchone()
                if taken >= limit:
                    return False
                db.execute("INSERT INTO leases VALUES (?, ?, ?)", (key, lease, at + ttl))
                return True

        return await self._file.run(take)

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> None:
        rows = [(now() + ttl, key, lease) for key, lease in leases]
        await self._file.run(
            lambda db: db.executemany("UPDATE leases SET expiry = ? WHERE key = ? AND lease = ?", rows)
        )

    async def release(self, key: str, lease: str) -> None:
        await self._file.run(lambda db: db.execute("DELETE FROM leases WHERE key = ? AND lease = ?", (key, lease)))

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        def write(db: sqlite3.Connection) -> None:
            at = now()
            with db:
                db.execute("DELETE FROM kept WHERE expiry <= ?", (at,))
                db.execute("INSERT OR REPLACE INTO kept VALUES (?, ?, ?)", (key, value, at + ttl))

        await self._file.run(write)

    async def get(self, key: str) -> bytes | None:
        def read(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT value FROM kept WHERE key = ? AND expiry > ?", (key, now())).fetchone()
            return bytes(row[0]) if row else None

        return await self._file.run(read)

    async def delete(self, key: str) -> bool:
        def remove(db: sqlite3.Connection) -> bool:
            return bool(db.execute("DELETE FROM kept WHERE key = ? AND expiry > ?", (key, now())).rowcount)

        return await self._file.run(remove)

    async def slots_taken(self, key: str) -> int:
        def count(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT count(*) FROM leases WHERE key = ? AND expiry > ?", (key, now())).fetchone()
            return int(row[0])

        return await self._file.run(count)


class _Window:
    """A window's running total, and its events read from the table only as far as needed."""

    def __init__(self, db: sqlite3.Connection, key: str, used: int):
        self._db, self._key, self.used = db, key, used

    def oldest(self) -> Iterator[Event]:
        rows = self._db.execute("SELECT time, cost FROM events WHERE key = ? ORDER BY time", (self._key,))
        return (Event(*row) for row in rows)


def _window(db: sqlite3.Connection, key: str, at: float) -> _Window:
    """The window, its expired events removed (in the caller's transaction)."""
    cutoff = at - WINDOW_SECONDS
    (expired,) = db.execute("SELECT sum(cost) FROM events WHERE key = ? AND time <= ?", (key, cutoff)).fetchone()
    if expired:
        db.execute("DELETE FROM events WHERE key = ? AND time <= ?", (key, cutoff))
        db.execute("UPDATE totals SET used = used - ? WHERE key = ?", (expired, key))
    row = db.execute("SELECT used FROM totals WHERE key = ?", (key,)).fetchone()
    return _Window(db, key, row[0] if row else 0)


def _add(db: sqlite3.Connection, key: str, at: float, cost: int) -> None:
    db.execute("INSERT INTO events VALUES (?, ?, ?)", (key, at, cost))
    db.execute(
        "INSERT INTO totals VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET used = used + excluded.used", (key, cost)
    )


def _admit(db: sqlite3.Connection, windows: Sequence[Window]) -> Admission:
    at = now()
    with db:
        db.execute("BEGIN IMMEDIATE")
        admission = decide(windows, {window.key: _window(db, window.key, at) for window in windows}, at)
        if admission.admitted:
            for window in windows:
                if window.cost:
                    _add(db, window.key, at, window.cost)
        return admission


def _lift(db: sqlite3.Connection, address: str) -> bool:
    with db:
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM strikes WHERE address = ?", (address,))
        return bool(db.execute("DELETE FROM bans WHERE address = ?", (address,)).rowcount > 0)


def _active_bans(db: sqlite3.Connection) -> list[Ban]:
    rows = db.execute("SELECT address, since, until FROM bans WHERE until = ? OR until > ?", (FOREVER, now()))
    return [Ban(*row) for row in rows]
