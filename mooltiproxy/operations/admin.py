"""The proxy's own API, under a reserved prefix (default /_proxy/) that is never forwarded.

GET health answers without a key and tells nothing of the internals; GET ready says whether the
default target answers (503 when it does not), and with the proxy key what each target said when
last asked; metrics, the ban list, lifting a ban, the limits' usage and the route table need the
proxy key itself (metrics are open with system.metrics_public).
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
        readiness: Callable[[], tuple[bool, dict[str, Any]]],
        routes: list[dict[str, Any]],
        metrics_public: bool,
    ):
        self.prefix = prefix
        self.health_path = prefix + "health"
        self.ready_path = prefix + "ready"
        self.metrics_path = prefix + "metrics"
        self._readiness = readiness
        self._routes = routes
        self._store = store
        self._metrics = metrics
        self._limits = limits
        self._metrics_public = metrics_public

    def answers_without_key(self, request: web.BaseRequest) -> bool:
        if request.method != "GET":
            return False
        path = request.path
        if path == self.ready_path:  # with credentials, the guard checks them and the details follow
            return "Authorization" not in request.headers and "x-api-key" not in request.headers
        return path == self.health_path or (self._metrics_public and path == self.metrics_path)

    async def open_route(self, request: web.BaseRequest) -> web.Response:
        if request.path == self.ready_path:
            return self.ready(details=False)
        return self.health() if request.path == self.health_path else await self.metrics()

    def ready(self, *, details: bool) -> web.Response:
        ready, targets = self._readiness()
        body: dict[str, Any] = {"status": "ready" if ready else "not ready"}
        if details:
            body["targets"] = targets
        return json_response(body, status=200 if ready else 503)

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
        if action == "routes":
            _allow(request, "GET")
            return json_response({"routes": self._routes})
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
        if path == self.ready_path:
            _allow(request, "GET")
            return self.ready(details=True)
        if path == self.metrics_path:
            _allow(request, "GET")
            return await self.metrics()
        raise ProxyError(404, f"No admin route '{path}'", code="unknown_route")


def _allow(request: web.BaseRequest, method: str) -> None:
    if request.method != method:
        raise ProxyError(405, f"Use {method} here", code="method_not_allowed", headers={"Allow": method})
