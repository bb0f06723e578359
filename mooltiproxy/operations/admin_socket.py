"""The operator's door that is not the proxy's port: a Unix socket (mode 0600, in a folder of mode
0700), as HAProxy's stats socket, where whoever may open the file may list and lift bans. A ban
must keep refusing a right key from a banned address, or it would tell which guess was right; an
operator who banned their own address with a typo gets back in through this socket, with
`mooltiproxy bans` and `mooltiproxy unban ADDRESS`.

    GET /bans               {"bans": [...]}
    DELETE /bans/ADDRESS    {"lifted": ADDRESS}, or 404
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

from aiohttp import web

from mooltiproxy.guard.client_address import parse_address
from mooltiproxy.state.store import StateStore


def _answer(status: int, payload: object) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload).encode(), content_type="application/json")


class AdminSocket:
    def __init__(self, path: Path, store: StateStore):
        self.path = path
        self._store = store
        self._server = web.Server(self._handle, access_log=None)
        self._listener: asyncio.AbstractServer | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a proxy that did not stop cleanly
        # Created with no permission for others at all, before anyone could connect.
        previous = os.umask(0o177)
        try:
            self._listener = await asyncio.get_running_loop().create_unix_server(self._server, str(self.path))
        finally:
            os.umask(previous)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        if request.path == "/bans" and request.method == "GET":
            return _answer(200, {"bans": [ban.as_json() for ban in await self._store.bans()]})
        if request.path.startswith("/bans/") and request.method == "DELETE":
            address = parse_address(request.path[len("/bans/") :])
            if address is None:
                return _answer(400, {"error": "expected an IP address after /bans/"})
            if not await self._store.lift(str(address)):
                return _answer(404, {"error": f"{address} is not banned"})
            return _answer(200, {"lifted": str(address)})
        return _answer(404, {"error": "GET /bans, or DELETE /bans/ADDRESS"})
