"""What each target says of its model: TGI's `/info` (`model_id`, `max_total_tokens`,
`max_stop_sequences`), else an OpenAI-compatible server's `/v1/models` (vLLM's and SGLang's
`max_model_len`, llama.cpp's `meta.n_ctx_train`). A target's `context_length` in the config wins.

Asked once per target and kept until the next reload; a target that could not be asked is asked
again a minute later. Requests waiting for the first answer share it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import aiohttp
from yarl import URL

from mooltiproxy.config.settings import Target, TargetInfo
from mooltiproxy.core.accelerators import loads
from mooltiproxy.forwarding.upstream import UPSTREAM_ERRORS, UpstreamPool, tls_context

log = logging.getLogger("mooltiproxy.targets")

PROBE_TIMEOUT_SECONDS = 3.0
RETRY_SECONDS = 60.0


class TargetInfos:
    def __init__(self, targets: Mapping[str, Target], pool: UpstreamPool, authorizations: Mapping[str, str | None]):
        self._targets = targets
        self._pool = pool
        self._authorizations = authorizations
        self._known: dict[str, asyncio.Task[TargetInfo]] = {}
        self._retry_after: dict[str, float] = {}

    async def of(self, name: str) -> TargetInfo:
        task = self._known.get(name)
        if task is None or self._worth_asking_again(name, task):
            self._retry_after[name] = time.monotonic() + RETRY_SECONDS
            task = self._known[name] = asyncio.ensure_future(self._learn(self._targets[name]))
        return await asyncio.shield(task)

    def _worth_asking_again(self, name: str, task: asyncio.Task[TargetInfo]) -> bool:
        return task.done() and task.result().source == "nothing" and time.monotonic() > self._retry_after[name]

    async def announce(self) -> None:
        """One line per target: what it serves and its context, or that it could not be asked."""
        infos = await asyncio.gather(*(self.of(name) for name in self._targets))
        for name, info in zip(self._targets, infos, strict=True):
            if info.source == "nothing":
                log.warning("target %s: could not read its model and limits (/info, /v1/models)", name)
            else:
                context = f"{info.context_length} tokens" if info.context_length else "not said"
                log.info("target %s: model %s, context %s (from %s)", name, info.model_id or "-", context, info.source)

    async def _learn(self, target: Target) -> TargetInfo:
        # A session of its own, whose connections close after each answer: the pool's carry only
        # clients' requests.
        connector = aiohttp.TCPConnector(force_close=True, ssl=tls_context(target.verify))
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            info = await self._ask(session, target, "/info", _from_tgi_info) or await self._ask(
                session, target, "/v1/models", _from_models
            )
        info = info or TargetInfo()
        if target.context_length is not None:
            info = replace(info, context_length=target.context_length, source="the config")
        return info

    async def _ask(self, session: aiohttp.ClientSession, target: Target, path: str, read: Any) -> TargetInfo | None:
        authorization = self._authorizations.get(target.name)
        headers = {"Authorization": authorization} if authorization else {}
        url = self._pool.balancer(target.name).pick() + path
        try:
            async with session.get(URL(url, encoded=True), headers=headers, allow_redirects=False) as answer:
                body = await answer.read() if answer.status == 200 else b""
            info: TargetInfo | None = read(loads(body)) if body else None
        except (*UPSTREAM_ERRORS, TimeoutError, ValueError, TypeError, AttributeError, KeyError, IndexError):
            return None
        return info


def _from_tgi_info(body: Any) -> TargetInfo | None:
    total = body.get("max_total_tokens")
    if not isinstance(total, int):
        return None
    stops = body.get("max_stop_sequences")
    model_id = body.get("model_id")
    return TargetInfo(
        model_id=model_id if isinstance(model_id, str) else None,
        context_length=total,
        max_stop_sequences=stops if isinstance(stops, int) else None,
        source="/info",
    )


def _from_models(body: Any) -> TargetInfo | None:
    model = body["data"][0]
    length = model.get("max_model_len") or (model.get("meta") or {}).get("n_ctx_train")
    model_id = model.get("id")
    return TargetInfo(
        model_id=model_id if isinstance(model_id, str) else None,
        context_length=length if isinstance(length, int) else None,
        source="/v1/models",
    )
