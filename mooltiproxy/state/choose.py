"""The state store the config names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from mooltiproxy.config.settings import GuardSettings, SystemSettings
from mooltiproxy.state.fallback import WithFallback
from mooltiproxy.state.memory import MemoryStore
from mooltiproxy.state.redis_store import RedisStore
from mooltiproxy.state.sqlite import SQLiteStore
from mooltiproxy.state.store import StateStore


def state_store(
    system: SystemSettings, guard: GuardSettings, environ: Mapping[str, str], on_error: Callable[[], None]
) -> StateStore:
    """Redis for many instances; a SQLite file for the processes of one machine (`system.state`,
    which wins, else `cerbere.ban_file`); else this process's memory."""
    if system.state is not None and system.state.startswith(("redis://", "rediss://")):
        password = environ.get(system.state_envkey) if system.state_envkey else None
        remote = RedisStore(system.state, password, system.state_timeout, system.state_connections)
        return WithFallback(remote, system.state_timeout, system.state_connections, system.limits_fail_closed, on_error)
    path = system.state or guard.ban_file
    return SQLiteStore(Path(path)) if path is not None else MemoryStore()
