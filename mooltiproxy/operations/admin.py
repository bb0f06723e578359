"""The proxy's own API, under a reserved prefix (default /_proxy/) that is never forwarded.

GET health answers without a key and tells nothing of the internals; metrics, the ban list,
lifting a ban and the limits' usage need the proxy key itself (metrics are open with
system.metrics_public).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mooltiproxy.config.settings import MASTER, ClientKey
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.metrics import render
from mooltiproxy.guard.client_address import parse_address
from mooltiproxy.serving.responses import json_response, text_response
from mooltiproxy.state.store import StateStore

_HEALTHY = json.dumps({"status": "ok"}).encode()


class Admin:
    def __init__(
        self,
        prefix: str,
        store: StateStore,
        metrics: Callable[[], Awaitable[dict[str, Any]]],
        limits: Callable[[], Awaitable[dict[str, Any]]],
        metrics_public: bool,
    ):
        self.prefix = prefix
        self.health_path = prefix + "health"
        self.metrics_path = prefix + "metrics"
        self._store = store
        self._metrics = metrics
        self._limits = limits
        self._metrics_public = metrics_public

    def answers_without_key(self, request: web.BaseRequest) -> bool:
        return request.method == "GET" and (
            request.path == self.health_path or (self._metrics_public and request.path == self.metrics_path)
        )

    async def open_route(self, request: web.BaseRequest) -> web.Response:
        return self.health() if request.path == self.health_path else await self.metrics()

    @staticmethod
    def health() -> web.Response:
        return web.Response(body=_HEALTHY, content_type="application/json")

    async def metrics(self) -> web.Response:
        banned = len(await self._store.bans())
        text = render(await self._metrics(), banned)
        return text_response(text, headers={"Cache-Control": "no-store"}, content_type="text/plain")

    async def handle(self, request: web.BaseRequest, path: str, client: ClientKey) -> web.Response:
        if client.name != MASTER:
            raise ProxyError(403, "The admin API needs the proxy key", code="admin_only")
        action = path[len(self.prefix) :]
        if action == "bans":
            _allow(request, "GET")
            bans = [ban.as_json() for ban in await self._store.bans()]
            return json_response({"bans": bans})
        if action == "limits":
            _allow(request, "GET")
            return json_response(await self._limits())
        if action.startswith("bans/"):
            _allow(request, "DELETE")
            address = parse_address(action[len("bans/") :])
            if address is None:
                raise ProxyError(400, "Expected an IP address after bans/", code="invalid_address")
            if not await self._store.lift(str(address)):
                raise ProxyError(404, f"{address} is not banned", code="not_banned")
            return json_response({"lifted": str(address)})
        if path == self.health_path:
            return self.health()
        if path == self.metrics_path:
            _allow(request, "GET")
            return await self.metrics()
        raise ProxyError(404, f"No admin route '{path}'", code="unknown_route")


def _allow(request: web.BaseRequest, method: str) -> None:
    if request.method != method:
        raise ProxyError(405, f"Use {method} here", code="method_not_allowed", headers={"Allow": method})
