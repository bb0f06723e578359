"""GET /models and /v1/models when the target does not map them: an OpenAI model list built from
the targets a client may use. Every id listed routes to what lists it: a target's `models:`, and the
default target's model (the id it says it serves, else its name), which every other name reaches.
A target with neither is reached by the `target` header, and is not listed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web

from mooltiproxy.config.settings import ClientKey, Target
from mooltiproxy.forwarding.target_info import TargetInfos
from mooltiproxy.serving.responses import json_response

LISTING_PATHS = frozenset({"/models", "/v1/models"})


class ModelCatalog:
    def __init__(self, targets: Mapping[str, Target], default: str, infos: TargetInfos):
        self._targets = targets
        self._default = default
        self._infos = infos

    async def listing(self, client: ClientKey, anthropic: bool = False) -> web.Response:
        """OpenAI's model list, or Anthropic's for a client that says it speaks Anthropic's API."""
        names = [
            name
            for name, target in self._targets.items()
            if (client.targets is None or name in client.targets) and (target.models or name == self._default)
        ]
        ids = await asyncio.gather(*(self._model_ids(name) for name in names))
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

    async def _model_ids(self, name: str) -> list[str]:
        target = self._targets[name]
        if target.models:
            return list(target.models)
        return [(await self._infos.of(name)).model_id or name]
