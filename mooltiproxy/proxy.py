"""The request pipeline: guard -> route (target, fallbacks) -> forward; and reloads."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from .admin import Admin
from .context import RequestContext
from .cors import is_preflight, preflight_response
from .errors import ProxyError, error_response
from .exchange import TargetFailed
from .forwarding import Forwarder
from .guard import Guard
from .ids import unique_id
from .incoming import IncomingRequest
from .logs import log_access
from .metrics import Metrics
from .models import LISTING_PATHS, ModelCatalog
from .responses import Response, StreamResponse
from .routing import split_request_target
from .settings import ClientKey, Config, Endpoint, Target
from .stamping import stamp
from .upstream import UpstreamPool

log = logging.getLogger("mooltiproxy.proxy")

_CLIENT_CLOSED = 499  # nginx's convention, for the access log only


@dataclass(frozen=True, slots=True)
class RoutingState:
    """Everything a config decides; a reload swaps it whole, in-flight requests keep theirs."""

    config: Config
    guard: Guard
    admin: Admin
    pool: UpstreamPool
    forwarder: Forwarder
    catalog: ModelCatalog
    authorizations: dict[str, str | None]
    model_routes: dict[str, str]


def routing_state(config: Config, guard: Guard, admin: Admin, pool: UpstreamPool, metrics: Metrics) -> RoutingState:
    # Precomputed so that the hot path only looks things up.
    authorizations = {name: f"Bearer {t.key}" if t.key else None for name, t in config.targets.items()}
    return RoutingState(
        config=config,
        guard=guard,
        admin=admin,
        pool=pool,
        forwarder=Forwarder(pool, authorizations, metrics, config.system.debug),
        catalog=ModelCatalog(config.targets, pool),
        authorizations=authorizations,
        model_routes={model: name for name, target in config.targets.items() for model in target.models},
    )


class Proxy:
    def __init__(self, state: RoutingState, metrics: Metrics):
        self.state = state
        self._metrics = metrics

    async def handle(self, request: IncomingRequest) -> Response | StreamResponse:
        started = time.perf_counter()
        state = self.state
        context = RequestContext(request.remote or "-", _request_id(request.headers.get("X-Request-ID")))
        request.context = context
        response: Response | StreamResponse | None = None
        try:
            response = await self._dispatch(state, request, context)
        except ProxyError as error:
            if error.code is not None and error.code.startswith("upstream_"):
                self._metrics.add("mooltiproxy_upstream_errors_total", target=_target_of(context), kind=error.code)
            response = error_response(error)
        except ConnectionResetError:
            # The client went away while the answer was being written to it.
            response = Response(_CLIENT_CLOSED)
        except Exception as exc:
            log.error(
                "internal error on %s %s: %s: %s",
                request.method,
                request.path,
                type(exc).__name__,
                exc,
                exc_info=state.config.system.debug,
            )
            response = error_response(ProxyError(500, "Internal proxy error", code="internal_error"))
        finally:
            # Reached on cancellation too (the client went away): still one access line.
            elapsed = time.perf_counter() - started
            status = response.status if response is not None else _CLIENT_CLOSED
            log_access(context, request.method, request.path, status, elapsed)
            self._count(context, status, elapsed)
        if not response.prepared:
            stamp(request, response)
        return response

    def _count(self, context: RequestContext, status: int, elapsed: float) -> None:
        route = context.endpoint.incoming_path if context.endpoint else "-"
        self._metrics.route(_target_of(context), route).record(
            status, elapsed, context.upstream_seconds, context.prompt_tokens, context.completion_tokens
        )

    async def _dispatch(
        self, state: RoutingState, request: IncomingRequest, context: RequestContext
    ) -> Response | StreamResponse:
        if state.admin.answers_without_key(request):
            return await state.admin.open_route(request)
        guard = state.guard
        caller = guard.caller(request)
        if caller.address is not None:
            context.client_ip = caller.key
        refusal = guard.refusal(caller)
        if refusal is not None:
            log.warning("refused %s client %s", refusal, context.client_ip)
            raise ProxyError(403, "Access denied", code=f"ip_{refusal}")
        if is_preflight(request):
            return preflight_response(request)
        client = guard.identify(request.headers.get("Authorization"))
        if client is None:
            await guard.strike(caller)
            log.warning("client %s: missing or invalid API key", context.client_ip)
            raise ProxyError(
                401,
                "Missing or invalid API key: send it as 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        context.client_name = client.name
        path, query = split_request_target(request.raw_path)
        if path.startswith(state.admin.prefix):
            return await state.admin.handle(request, path, client)
        # The usual case, a body that came with its head, is taken without a wait.
        context.raw_body = request.received() if request.body_complete else await self._read_body(state, request)
        target = self._choose_target(state, request, context)
        context.target = target
        _check_allowed(client, target)
        candidates = self._candidates(state, client, target, path)
        if not candidates:
            if request.method == "GET" and path in LISTING_PATHS:
                return await state.catalog.listing(client, state.authorizations)
            raise ProxyError(404, f"No route for '{path}' on target '{target.name}'", code="unknown_route")
        return await self._forward(state, request, context, candidates, query)

    async def _forward(
        self,
        state: RoutingState,
        request: IncomingRequest,
        context: RequestContext,
        candidates: list[tuple[Target, Endpoint]],
        query: str,
    ) -> Response | StreamResponse:
        """The target, then its fallbacks in order while they fail."""
        for index, (target, endpoint) in enumerate(candidates):
            can_fall_back = index + 1 < len(candidates)
            try:
                return await state.forwarder.forward(
                    request, context, target, endpoint, query, can_fall_back=can_fall_back
                )
            except TargetFailed as failure:
                log.warning(
                    "target %s failed (%s); falling back on %s",
                    target.name,
                    failure.error.message,
                    candidates[index + 1][0].name,
                )
                self._metrics.add("mooltiproxy_upstream_errors_total", target=target.name, kind="fallback")
        raise AssertionError("the last candidate cannot fall back")

    @staticmethod
    def _candidates(state: RoutingState, client: ClientKey, target: Target, path: str) -> list[tuple[Target, Endpoint]]:
        endpoint = target.find_endpoint(path)
        if endpoint is None:
            return []
        candidates = [(target, endpoint)]
        for name in target.fallback:
            fallback = state.config.targets[name]
            fallback_endpoint = fallback.find_endpoint(path)
            # A client limited to some targets never falls back outside them.
            if fallback_endpoint is not None and (client.targets is None or name in client.targets):
                candidates.append((fallback, fallback_endpoint))
        return candidates

    @staticmethod
    def _choose_target(state: RoutingState, request: IncomingRequest, context: RequestContext) -> Target:
        """The `target` header; else the target claiming the body's model; else the default."""
        name = request.headers.get("target")
        if not name and state.model_routes and context.raw_body:
            try:
                model = context.body.get("model")
            except ProxyError:
                model = None
            name = state.model_routes.get(model) if isinstance(model, str) else None
        name = name or state.config.default_target
        target = state.config.targets.get(name)
        if target is None:
            raise ProxyError(404, f"Unknown target '{name}'", code="unknown_target", param="target")
        return target

    @staticmethod
    async def _read_body(state: RoutingState, request: IncomingRequest) -> bytes:
        """The whole body (413 past system.max_body_size, 408 when it comes too slowly)."""
        try:
            async with asyncio.timeout(state.config.system.client_timeout):
                return await request.read()
        except TimeoutError:
            raise ProxyError(408, "The request body took too long to arrive", code="request_timeout") from None


def _check_allowed(client: ClientKey, target: Target) -> None:
    if client.targets is not None and target.name not in client.targets:
        raise ProxyError(403, f"Client '{client.name}' may not use target '{target.name}'", code="target_not_allowed")


def _target_of(context: RequestContext) -> str:
    return context.answered_by or (context.target.name if context.target else "-")


def _request_id(given: str | None) -> str:
    """The client's X-Request-ID when it is a sane one, else a new one."""
    if given and len(given) <= 128 and given.isprintable():
        return given
    return unique_id()
