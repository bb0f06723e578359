"""The routes the proxy answers itself, with no target behind them: the admin API, and those a front
declares (its stored responses, say). One table, matched in order: the first route whose pattern
matches the path decides, and another method there is a 405 naming the ones it takes."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from mooltiproxy.config.settings import MASTER, ClientKey
from mooltiproxy.core.errors import ProxyError

# (the request, its path's match, the client) -> the answer
OwnHandler = Callable[[web.BaseRequest, "re.Match[str]", ClientKey], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class OwnRoute:
    pattern: re.Pattern[str]  # of the whole path
    handle: OwnHandler
    methods: frozenset[str] = frozenset()  # none: every method
    master_only: bool = False  # the proxy key's holder only (a 403 for anyone else, whatever the method)


class OwnRoutes:
    """The table, with every pattern in one regex too: most requests are for a target, and learn it
    from one match rather than one per route."""

    def __init__(self, routes: Sequence[OwnRoute]):
        self.routes = tuple(routes)
        self._any = re.compile("|".join(f"(?{_flags(route.pattern)}:{route.pattern.pattern})" for route in routes))

    async def answer(self, request: web.BaseRequest, path: str, client: ClientKey) -> web.StreamResponse | None:
        """The answer of the first route the path matches; None when none does."""
        if not self.routes or self._any.fullmatch(path) is None:
            return None
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if found is None:
                continue
            if route.master_only and client.name != MASTER:
                raise ProxyError(403, "The admin API needs the proxy key", code="admin_only")
            if route.methods and request.method not in route.methods:
                listed = ", ".join(sorted(route.methods))
                raise ProxyError(405, f"Use {listed} here", code="method_not_allowed", headers={"Allow": listed})
            return await route.handle(request, found, client)
        return None


def _flags(pattern: re.Pattern[str]) -> str:
    return "s" if pattern.flags & re.DOTALL else ""
