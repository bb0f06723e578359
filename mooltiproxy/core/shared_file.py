"""The SQLite file that processes share (bans, strikes, metrics), opened so that processes starting
at the same moment never trip over each other."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

BUSY_TIMEOUT_SECONDS = 10
_RETRY_SECONDS = 0.01


def open_shared_file(path: Path, schema: Sequence[str]) -> sqlite3.Connection:
    """A connection in autocommit mode, with the `schema` statements (CREATE ... IF NOT EXISTS) run.

    Called in a worker thread: it may wait for the other processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        _switch_to_wal(connection)
        connection.execute("PRAGMA synchronous=NORMAL")
        # The write lock is taken up front. Two processes creating tables in autocommit mode can
        # each hold the read lock the other must see go, and SQLite then fails one at once rather
        # than wait ("database is locked").
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            for statement in schema:
                connection.execute(statement)
    except BaseException:
        connection.close()
        raise
    return connection


def _switch_to_wal(connection: sqlite3.Connection) -> None:
    # While another process is switching a new file to WAL, SQLite answers "database is locked" at
    # once instead of waiting for it: tried again until the busy timeout.
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(_RETRY_SECONDS)


class SharedFile:
    """A connection to the shared file, owned by one thread so that SQLite never blocks the event loop."""

    def __init__(self, path: Path, schema: Sequence[str], thread_name: str):
        self.path = path
        self._schema = schema
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._connection: sqlite3.Connection | None = None

    async def open(self) -> None:
        def connect() -> None:
            self._connection = open_shared_file(self.path, self._schema)

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)`, in the file's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, work)

    async def close(self) -> None:
        if self._connection is not None:
            await self.run(sqlite3.Connection.close)
            self._connection = None
        self._executor.shutdown(wait=True)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            raise sqlite3.ProgrammingError(f"{self.path} is not open")
        return work(self._connection)
