"""GET /models and /v1/models when the target does not map them: an OpenAI model list built from
the targets a client may use (their `models:`, else the model id of each TGI's /info, cached)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from aiohttp import web
from multidict import CIMultiDict

from mooltiproxy.config.settings import ClientKey, Target
from mooltiproxy.core.accelerators import loads
from mooltiproxy.forwarding.upstream import UPSTREAM_ERRORS, UpstreamPool
from mooltiproxy.serving.responses import json_response

log = logging.getLogger("mooltiproxy.models")

LISTING_PATHS = frozenset({"/models", "/v1/models"})
INFO_TTL_SECONDS = 60.0
INFO_TIMEOUT_SECONDS = 3.0


class ModelCatalog:
    def __init__(self, targets: Mapping[str, Target], pool: UpstreamPool):
        self._targets = targets
        self._pool = pool
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def listing(
        self, client: ClientKey, authorizations: Mapping[str, str | None], anthropic: bool = False
    ) -> web.Response:
        """OpenAI's model list, or Anthropic's for a client that says it speaks Anthropic's API."""
        names = [name for name in self._targets if client.targets is None or name in client.targets]
        ids = await asyncio.gather(*(self._model_ids(name, authorizations[name]) for name in names))
        owners: dict[str, str] = {}
        for name, models in zip(names, ids, strict=True):
            for model in models:
                owners.setdefault(model, name)
        if anthropic:
            data = [
                {"type": "model", "id": model, "display_name": model, "created_at": "1970-01-01T00:00:00Z"}
                for model in owners
            ]
            first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
            return json_response({"data": data, "has_more": False, "first_id": first, "last_id": last})
        listed = [{"id": model, "object": "model", "created": 0, "owned_by": name} for model, name in owners.items()]
        return json_response({"object": "list", "data": listed})

    async def _model_ids(self, name: str, authorization: str | None) -> list[str]:
        target = self._targets[name]
        if target.models:
            return list(target.models)
        cached = self._cache.get(name)
        if cached is None or cached[0] < time.monotonic():
            self._cache[name] = (time.monotonic() + INFO_TTL_SECONDS, await self._info_model_id(target, authorization))
        return [self._cache[name][1] or name]

    async def _info_model_id(self, target: Target, authorization: str | None) -> str | None:
        """The model_id of TGI's /info, or None when the target has no such thing."""
        headers = CIMultiDict({"Authorization": authorization} if authorization else {})
        url = self._pool.balancer(target.name).pick() + "/info"
        try:
            async with asyncio.timeout(INFO_TIMEOUT_SECONDS):
                answer = await self._pool.client(target.name).request("GET", url, headers, None)
                try:
                    if answer.status != 200:
                        return None
                    model_id = loads(await answer.read()).get("model_id")
                finally:
                    answer.release()
        except (*UPSTREAM_ERRORS, ValueError, AttributeError) as exc:  # timeouts included
            log.info("no model id from target %s's /info: %s", target.name, type(exc).__name__)
            return None
        return model_id if isinstance(model_id, str) else None
