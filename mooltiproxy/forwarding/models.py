"""GET /models and /v1/models when the target does not map them: the models of the targets a client
may use, which the client's front writes in its API's shape. Every id listed routes to what lists it:
a target's `models:`, and the default target's model (the id it says it serves, else its name),
which every other name reaches. A target with neither is reached by the `target` header, and is not
listed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from mooltiproxy.config.settings import ClientKey, Target
from mooltiproxy.forwarding.target_info import TargetInfos

LISTING_PATHS = frozenset({"/models", "/v1/models"})


class ModelCatalog:
    def __init__(self, targets: Mapping[str, Target], default: str, infos: TargetInfos):
        self._targets = targets
        self._default = default
        self._infos = infos

    async def listing(self, client: ClientKey) -> dict[str, str]:
        """The ids the client may call, each with the target that serves it."""
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
        return owners

    async def _model_ids(self, name: str) -> list[str]:
        target = self._targets[name]
        if target.models:
            return list(target.models)
        return [(await self._infos.of(name)).model_id or name]
