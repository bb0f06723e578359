"""The proxy's own API, under a reserved prefix (default /_proxy/) that is never forwarded.

GET health answers without a key and tells nothing of the internals; GET ready says whether the
default target answers (503 when it does not), and with the proxy key what each target said when
last asked; metrics, the ban list, lifting a ban, the limits' usage and the route table need the
proxy key itself (metrics are open with system.metrics_public), and so does the list of guards
(each route's own are in the route table).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from mooltiproxy.config.settings import ClientKey
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.metrics import render
from mooltiproxy.guard.client_address import parse_address
from mooltiproxy.serving.own_routes import OwnHandler, OwnRoute
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
        guards: list[dict[str, Any]],
        metrics_public: bool,
    ):
        self._guards = guards
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

    def answers_without_key(
        self, request: web.BaseRequest, presents_credentials: Callable[[Mapping[str, str]], bool]
    ) -> bool:
        if request.method != "GET":
            return False
        path = request.path
        if path == self.ready_path:  # with credentials, the guard checks them and the details follow
            return not presents_credentials(request.headers)
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

    def routes(self) -> tuple[OwnRoute, ...]:
        """The admin API, for the proxy key's holder; anything else under the prefix is a 404."""
        prefix = re.escape(self.prefix)

        def route(path: str, handle: OwnHandler, *methods: str) -> OwnRoute:
            return OwnRoute(re.compile(prefix + path, re.DOTALL), handle, frozenset(methods), master_only=True)

        return (
            route("bans", self._bans, "GET"),
            route("bans/(.*)", self._lift, "DELETE"),
            route("limits", self._limits_usage, "GET"),
            route("routes", self._route_table, "GET"),
            route("guards", self._guard_list, "GET"),
            route("health", self._health),
            route("ready", self._ready, "GET"),
            route("metrics", self._metrics_text, "GET"),
            route("(.*)", self._unknown),
        )

    async def _bans(self, request: web.BaseRequest, found: re.Match[str], client: ClientKey) -> web.Response:
        return json_response({"bans": [ban.as_json() for ban in await self._store.bans()]})

    async def _lift(self, request: web.BaseRequest, found: re.Match[str], client: ClientKey) -> web.Response:
        address = parse_address(found.group(1))
        if address is None:
            raise ProxyError(400, "Expected an IP address after bans/", code="invalid_address")
        if not await self._store.lift(str(address)):
            raise ProxyError(404, f"{address} is not banned", code="not_banned")
        return json_response({"lifted": str(address)})

    async def _limits_usage(self, request: web.BaseRequest, found: re.Match[str], client: ClientKey) -> web.Response:
        return json_response(await self._limits())

    async def _route_table(self, request: web.BaseRequest, found: re.Match[str], client: ClientKey) -> web.Response:
        return json_response({"routes": self._routes})

    async def _guard_list(self, request: web.BaseRequest, found: re.Match[str], client: ClientKey) -> web.Response:
        return json_response({"guards": self._guards})

    async def _health(self, request: web.BaseRequest, found: re.Match[str], client: ClientKey) -> web.Response:
        return self.health()

    async def _ready(self, request: web.BaseRequest, found: re.Match[str], client: ClientKey) -> web.Response:
        return self.ready(details=True)

    async def _metrics_text(self, request: web.BaseRequest, found: re.Match[str], client: ClientKey) -> web.Response:
        return await self.metrics()

    async def _unknown(self, request: web.BaseRequest, found: re.Match[str], client: ClientKey) -> web.Response:
        raise ProxyError(404, f"No admin route '{request.path}'", code="unknown_route")
