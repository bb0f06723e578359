"""Responses kept for `previous_response_id` and for GET / DELETE /v1/responses/{id}.

They rest in the state store (so the prompts of those conversations do too), per client key (another
key gets a 404), for `system.responses_ttl` seconds, and only when they fit in
`system.responses_max_bytes`. A request with `store: false` (Codex's) keeps nothing.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

from mooltiproxy.config.settings import ClientKey
from mooltiproxy.core.accelerators import dumps, loads
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.mapping import Note
from mooltiproxy.serving.context import MapperContext
from mooltiproxy.serving.responses import json_response
from mooltiproxy.state.store import StateStore

log = logging.getLogger("mooltiproxy.responses")

FINAL = Note[dict[str, Any]]("responses.final")  # the Response the answer mapper made, left in the request's state
ROUTE = re.compile(r"^(?:/v1)?/responses/(resp_[A-Za-z0-9_-]{1,64})$")


class StoredResponses:
    def __init__(self, store: StateStore, ttl: float, max_bytes: int):
        self._store = store
        self._ttl = ttl
        self._max_bytes = max_bytes

    async def expand(self, context: MapperContext) -> None:
        """The request's input with the turns of its previous response put before it."""
        body = context.body
        previous = body.get("previous_response_id")
        if previous:
            kept = await self._load(context.client_name, str(previous))
            if kept is None:
                raise _not_found(str(previous), "previous_response_id")
            body["input"] = [*kept["input"], *kept["response"]["output"], *_items(body.get("input"))]

    async def keep(self, context: MapperContext) -> None:
        response = context.notes.get(FINAL)
        if response is None or context.body.get("store") is False:
            return
        data = dumps({"input": _items(context.body.get("input")), "response": response})
        if len(data) > self._max_bytes:
            log.info("response %s not kept: %d bytes, more than responses_max_bytes", response["id"], len(data))
            return
        await self._store.put(_key(context.client_name, response["id"]), data, self._ttl)

    async def answer(self, request: web.BaseRequest, found: re.Match[str], client: ClientKey) -> web.Response:
        """GET returns a kept response, DELETE forgets it."""
        response_id = found.group(1)
        if request.method == "DELETE":
            if not await self._store.delete(_key(client.name, response_id)):
                raise _not_found(response_id)
            return json_response({"id": response_id, "object": "response", "deleted": True})
        kept = await self._load(client.name, response_id)
        if kept is None:
            raise _not_found(response_id)
        return json_response(kept["response"])

    async def _load(self, client: str, response_id: str) -> dict[str, Any] | None:
        data = await self._store.get(_key(client, response_id))
        return loads(data) if data is not None else None


def _items(source: Any) -> list[Any]:
    if isinstance(source, str):
        return [{"type": "message", "role": "user", "content": source}]
    return list(source) if isinstance(source, list) else []


def _key(client: str, response_id: str) -> str:
    return f"response:{client}:{response_id}"


def _not_found(response_id: str, param: str | None = None) -> ProxyError:
    return ProxyError(404, f"Response with id '{response_id}' not found.", code="not_found", param=param)
