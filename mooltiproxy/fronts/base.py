"""What a front is: one client API as the proxy speaks it. The engine knows fronts only through
this class, and the defaults here are OpenAI's, the pivot's, shapes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from mooltiproxy.config.settings import SystemSettings
from mooltiproxy.core.errors import ProxyError, error_body
from mooltiproxy.forwarding.models import ListedModel
from mooltiproxy.serving.context import MapperContext
from mooltiproxy.serving.own_routes import OwnRoute
from mooltiproxy.state.store import StateStore
from mooltiproxy.translation.kinds import OPENAI_CHAT


@dataclass(frozen=True, slots=True)
class FrontServices:
    """What a front may use of the proxy."""

    store: StateStore
    system: SystemSettings


class Front:
    """A client API: its errors, its model list, its probes and key headers, its own routes, and
    its hooks around a call. Subclasses override what their API does differently."""

    kind: ClassVar[str] = OPENAI_CHAT  # what its request mappers take (translation/kinds.py)
    key_headers: ClassVar[tuple[str, ...]] = ()  # where its clients send the key, besides Authorization
    probes: ClassVar[frozenset[str]] = frozenset()  # paths its clients HEAD without a key, to see we are up

    def __init__(self, services: FrontServices):
        self.services = services

    def error_body(self, error: ProxyError, request_id: str | None) -> bytes:
        return error_body(error.status, error.message, error.code, error.param)

    def claims_listing(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """Whether a GET /v1/models with these headers and query comes from one of its clients."""
        return False

    def model_list(self, models: Mapping[str, ListedModel]) -> dict[str, Any]:
        """The list of model ids, with what serves them, in its API's shape."""
        data = [
            {"id": model, "object": "model", "created": 0, "owned_by": listed.target}
            for model, listed in models.items()
        ]
        return {"object": "list", "data": data}

    def own_routes(self) -> tuple[OwnRoute, ...]:
        """Routes it answers itself, with no target behind them."""
        return ()

    @property
    def has_hooks(self) -> bool:
        """Whether it does anything around a call (most fronts do not, and cost nothing there)."""
        return type(self).before is not Front.before or type(self).after is not Front.after

    async def before(self, context: MapperContext) -> None:
        """Runs once the request is admitted, before its mappers."""

    async def after(self, context: MapperContext) -> None:
        """Runs once a call has been answered in full."""
