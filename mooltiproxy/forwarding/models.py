"""GET /models and /v1/models when the target does not map them: the models of the targets a client
may use, which the client's front writes in its API's shape. Every id listed routes to what lists it:
a target's `models:`, and the default target's model (the id it says it serves, else its name),
which every other name reaches. A target with neither is reached by the `target` header, and is not
listed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from mooltiproxy.config.settings import ClientKey, Target
from mooltiproxy.forwarding.target_info import TargetInfos

LISTING_PATHS = frozenset({"/models", "/v1/models"})


@dataclass(frozen=True, slots=True)
class ListedModel:
    target: str  # the target that serves it
    context_length: int | None  # as the target says, or the config


class ModelCatalog:
    def __init__(self, targets: Mapping[str, Target], default: str, infos: TargetInfos):
        self._targets = targets
        self._default = default
        self._infos = infos

    async def listing(self, client: ClientKey) -> dict[str, ListedModel]:
        """The ids the client may call, each with the target that serves it."""
        names = [
            name
            for name, target in self._targets.items()
            if (client.targets is None or name in client.targets) and (target.models or name == self._default)
        ]
        ids = await asyncio.gather(*(self._model_ids(name) for name in names))
        listed: dict[str, ListedModel] = {}
        for name, models in zip(names, ids, strict=True):
            context_length = self._infos.last_known(name).context_length
            for model in models:
                listed.setdefault(model, ListedModel(name, context_length))
        return listed

    async def _model_ids(self, name: str) -> list[str]:
        target = self._targets[name]
        if target.models:
            return list(target.models)
        return [(await self._infos.of(name)).model_id or name]
