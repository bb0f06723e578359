"""`mooltiproxy bans` and `mooltiproxy unban ADDRESS`: through the running proxy's admin socket, or,
with no proxy running, on the state store itself when it outlives the proxy (SQLite, Redis)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import aiohttp

from mooltiproxy.config.settings import Config
from mooltiproxy.guard.client_address import parse_address
from mooltiproxy.state.choose import state_store
from mooltiproxy.state.memory import MemoryStore


async def run(config: Config, command: str, address: str | None) -> int:
    if command == "unban":
        parsed = parse_address(address or "")
        if parsed is None:
            print(f"mooltiproxy: unban needs an IP address, not {address!r}", file=sys.stderr)
            return 2
        address = str(parsed)
    path = config.system.admin_socket
    if path is not None and path.exists():
        try:
            return await _through_socket(str(path), command, address)
        except aiohttp.ClientConnectionError:
            pass  # a socket file left by a proxy that is gone
    return await _on_the_store(config, command, address)


async def _through_socket(path: str, command: str, address: str | None) -> int:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session:
        method, url = ("GET", "http://proxy/bans") if command == "bans" else ("DELETE", f"http://proxy/bans/{address}")
        async with session.request(method, url) as answer:
            return _said(answer.status, await answer.json())


async def _on_the_store(config: Config, command: str, address: str | None) -> int:
    store = state_store(config.system, config.guard, os.environ, lambda: None)
    if isinstance(store, MemoryStore):
        where = config.system.admin_socket or "no admin socket (system.admin_socket is null)"
        print(f"mooltiproxy: no running proxy answers at {where}, and its bans live in its memory:", file=sys.stderr)
        print("they end when it stops", file=sys.stderr)
        return 1
    await store.open()
    try:
        if command == "bans":
            return _said(200, {"bans": [ban.as_json() for ban in await store.bans()]})
        assert address is not None
        if await store.lift(address):
            return _said(200, {"lifted": address})
        return _said(404, {"error": f"{address} is not banned"})
    finally:
        await store.close()


def _said(status: int, answer: dict[str, Any]) -> int:
    if "bans" in answer:
        for ban in answer["bans"]:
            print(json.dumps(ban))
        if not answer["bans"]:
            print("no address is banned")
        return 0
    if "lifted" in answer:
        print(f"lifted the ban of {answer['lifted']}")
        return 0
    print(f"mooltiproxy: {answer.get('error', status)}", file=sys.stderr)
    return 1
