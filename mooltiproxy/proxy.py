"""The request pipeline: guard -> route (target, fallbacks) -> forward; and reloads."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from aiohttp import web

from mooltiproxy.config.settings import ClientKey, Config, Endpoint, Limits, SystemSettings, Target, find_route
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.ids import unique_id
from mooltiproxy.core.metrics import Metrics
from mooltiproxy.core.sealing import Sealer
from mooltiproxy.forwarding.exchange import TargetFailed
from mooltiproxy.forwarding.models import LISTING_PATHS, ModelCatalog
from mooltiproxy.forwarding.target_info import InfoReader, TargetInfos
from mooltiproxy.forwarding.upstream import UpstreamPool
from mooltiproxy.fronts.base import Front
from mooltiproxy.guard.gate import Caller, Guard
from mooltiproxy.guard.limits import Grant, Limiter, openai_headers
from mooltiproxy.guardrails.classifier import Classifiers
from mooltiproxy.operations.admin import Admin
from mooltiproxy.operations.logs import log_access
from mooltiproxy.serving.context import RequestContext
from mooltiproxy.serving.cors import is_preflight, preflight_response
from mooltiproxy.serving.incoming import BodyBudget, read_body
from mooltiproxy.serving.own_routes import OwnRoutes
from mooltiproxy.serving.request_target import split_request_target
from mooltiproxy.serving.responses import error_response, json_response
from mooltiproxy.serving.stamping import stamp
from mooltiproxy.translation.forwarder import Forwarder
from mooltiproxy.translation.kinds import PIVOT

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
    infos: TargetInfos
    limiter: Limiter
    authorizations: dict[str, str | None]
    model_routes: dict[str, str]
    fronts: dict[str, Front]  # by the kind their request mappers take
    hooked: dict[str, Front]  # those of them with hooks around a call
    front_paths: dict[str, Front]  # incoming path -> the front its clients speak, when not the pivot's
    own_routes: OwnRoutes  # the admin API's, then those of the fronts some route speaks
    probes: frozenset[str]  # paths clients HEAD without a key, to see the proxy is up
    sealer: Sealer

    def front_of(self, raw_target: str) -> Front:
        """Known from the path alone, so that even the guard's refusals speak the client's API."""
        return find_route(self.front_paths, raw_target.partition("?")[0]) or self.fronts[PIVOT]


def routing_state(
    config: Config,
    guard: Guard,
    admin: Admin,
    pool: UpstreamPool,
    metrics: Metrics,
    limiter: Limiter,
    fronts: Sequence[Front],
    info_readers: Sequence[InfoReader],
    sealer: Sealer,
    classifiers: Classifiers,
) -> RoutingState:
    # Precomputed so that the hot path only looks things up.
    authorizations = {name: f"Bearer {t.key}" if t.key else None for name, t in config.targets.items()}
    infos = TargetInfos(config.targets, pool, authorizations, info_readers)
    by_kind = {front.kind: front for front in fronts}
    front_paths = {
        path: by_kind[endpoint.front]
        for target in config.targets.values()
        for path, endpoint in target.endpoints.items()
        if endpoint.front in by_kind
    }
    spoken = dict.fromkeys(front_paths.values())  # each front once, in the order routes name them
    return RoutingState(
        config=config,
        guard=guard,
        admin=admin,
        pool=pool,
        forwarder=Forwarder(
            pool,
            infos,
            authorizations,
            metrics,
            config.system,
            config.guard.client_address_header,
            classifiers,
            guard.key_headers,
        ),
        catalog=ModelCatalog(config.targets, config.default_target, infos),
        infos=infos,
        limiter=limiter,
        authorizations=authorizations,
        model_routes={model: name for name, target in config.targets.items() for model in target.models},
        fronts=by_kind,
        hooked={kind: front for kind, front in by_kind.items() if front.has_hooks},
        front_paths=front_paths,
        own_routes=OwnRoutes([*admin.routes(), *(route for front in spoken for route in front.own_routes())]),
        probes=frozenset(path for front in fronts for path in front.probes),
        sealer=sealer,
    )


class Proxy:
    def __init__(self, state: RoutingState, metrics: Metrics):
        self.state = state
        self._metrics = metrics
        self._budget = BodyBudget()  # outlives reloads: the bytes it counts belong to requests in flight

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The answer to a request; a streamed one is already written, a complete one is not."""
        started = time.perf_counter()
        state = self.state
        context = RequestContext(request.remote or "-", _request_id(request.headers.get("X-Request-ID")), state.sealer)
        # Raw, as the client sent it: percent-escapes keep control characters out of the log.
        raw_target = _origin_form(request)
        response: web.StreamResponse | None = None
        try:
            response = await self._dispatch(state, request, context, raw_target)
        except ProxyError as error:
            if error.code is not None and error.code.startswith("upstream_"):
                self._metrics.add("mooltiproxy_upstream_errors_total", target=_target_of(context), kind=error.code)
            response = _error_response(state, error, raw_target, context)
        except ConnectionResetError:
            # The client went away while the answer was being written to it.
            response = web.Response(status=_CLIENT_CLOSED)
        except Exception as exc:
            log.error(
                "internal error on %s %s: %s: %s",
                request.method,
                raw_target.partition("?")[0],
                type(exc).__name__,
                exc,
                exc_info=state.config.system.debug,
            )
            internal = ProxyError(500, "Internal proxy error", code="internal_error")
            response = _error_response(state, internal, raw_target, context)
        finally:
            self._budget.give_back(context.held_bytes)
            if context.settle is not None:
                context.settle()
            # Reached on cancellation too (the client went away): still one access line.
            elapsed = time.perf_counter() - started
            status = response.status if response is not None else _CLIENT_CLOSED
            log_access(context, request.method, raw_target.partition("?")[0], status, elapsed)
            self._count(context, status, elapsed)
        if not response.prepared:
            stamp(request, context, response)
        return response

    def _count(self, context: RequestContext, status: int, elapsed: float) -> None:
        route = context.endpoint.incoming_path if context.endpoint else "-"
        self._metrics.route(_target_of(context), route).record(
            status, elapsed, context.upstream_seconds, context.prompt_tokens, context.completion_tokens
        )
        for event, amount in (context.events or {}).items():
            self._metrics.add("mooltiproxy_translation_events_total", amount, route=route, event=event)
        for (guard, action), hits in (context.guard_hits or {}).items():
            self._metrics.add("mooltiproxy_guard_hits_total", hits, guard=guard, action=action, route=route)

    async def _dispatch(
        self, state: RoutingState, request: web.BaseRequest, context: RequestContext, raw_target: str
    ) -> web.StreamResponse:
        """The stages, in order; each either answers or lets the request go on."""
        if state.admin.answers_without_key(request, state.guard.presents_credentials):
            return await state.admin.open_route(request)
        caller = _admitted_caller(state.guard, request, context)
        if is_preflight(request):
            return preflight_response(request)
        if _is_probe(state, request, raw_target):
            return web.Response()
        client = await state.guard.authenticate(caller, request.headers)
        context.client_name = client.name
        path, query = split_request_target(raw_target)
        own = await state.own_routes.answer(request, path, client)
        if own is not None:
            return own
        await self._read_body(state.config.system, request, context)
        target = context.target = _choose_target(state, request, context)
        if request.method == "GET" and path in LISTING_PATHS and target.find_endpoint(path) is None:
            return await _model_list(state, request, client)
        _check_allowed(client, target)
        await _admit(state.limiter, state.guard.limits_of(client), client, target, context)
        candidates = _candidates(state, client, target, path)
        _check_method(request.method, candidates[0][1])
        return await self._forward(state, request, context, candidates, query, caller)

    async def _read_body(self, system: SystemSettings, request: web.BaseRequest, context: RequestContext) -> None:
        def take(size: int) -> None:
            self._budget.take(size, system.max_inflight_bytes)
            context.held_bytes += size

        context.raw_body = await read_body(request, system.max_body_size, system.client_timeout, take)

    async def _forward(
        self,
        state: RoutingState,
        request: web.BaseRequest,
        context: RequestContext,
        candidates: list[tuple[Target, Endpoint]],
        query: str,
        caller: Caller,
    ) -> web.StreamResponse:
        """Through the route's front, to the target, then to its fallbacks in order while they fail."""
        front = state.hooked.get(candidates[0][1].front or "")
        if all(endpoint.request_mapper is not None for _, endpoint in candidates):
            context.keep_parsed_body_only()
            _apply_model_alias(context, candidates[0][0])
        if front is not None:
            await front.before(context)
        for index, (target, endpoint) in enumerate(candidates):
            can_fall_back = index + 1 < len(candidates)
            try:
                response = await state.forwarder.forward(
                    request,
                    context,
                    target,
                    endpoint,
                    query,
                    can_fall_back=can_fall_back,
                    via_trusted_proxy=caller.via_trusted_proxy,
                )
            except TargetFailed as failure:
                log.warning(
                    "target %s failed (%s); falling back on %s",
                    target.name,
                    failure.error.message,
                    candidates[index + 1][0].name,
                )
                self._metrics.add("mooltiproxy_upstream_errors_total", target=target.name, kind="fallback")
                continue
            if front is not None:
                await front.after(context)
            return response
        raise AssertionError("the last candidate cannot fall back")


def _is_probe(state: RoutingState, request: web.BaseRequest, raw_target: str) -> bool:
    """A client's HEAD to see the proxy is up, sent without a key, which a front declared."""
    return (
        request.method == "HEAD"
        and raw_target in state.probes
        and not state.guard.presents_credentials(request.headers)
    )


def _admitted_caller(guard: Guard, request: web.BaseRequest, context: RequestContext) -> Caller:
    """Who calls, refused at once when the address is blacklisted or banned."""
    caller = guard.caller(request)
    if caller.address is not None:
        context.client_ip = caller.key
    guard.check_address(caller)
    return caller


async def _model_list(state: RoutingState, request: web.BaseRequest, client: ClientKey) -> web.Response:
    """The proxy's own list of the models this client may use, in its front's shape."""
    headers, query = request.headers, request.query
    front = next((front for front in state.fronts.values() if front.claims_listing(headers, query)), None)
    return json_response((front or state.fronts[PIVOT]).model_list(await state.catalog.listing(client)))


async def _admit(limiter: Limiter, limits: Limits, client: ClientKey, target: Target, context: RequestContext) -> None:
    """The client's and the target's limits; what they grant is settled once the request ends."""
    grant = await limiter.admit(client.name, limits, target)
    if grant is not None:
        context.settle = partial(_settle, limiter, grant, context)
        context.reads_usage = bool(grant.token_keys)
        if grant.client_usage:
            context.rate_headers = openai_headers(grant.client_usage)


def _error_response(state: RoutingState, error: ProxyError, raw_target: str, context: RequestContext) -> web.Response:
    return error_response(error, state.front_of(raw_target).error_body(error, context.request_id))


def _candidates(state: RoutingState, client: ClientKey, target: Target, path: str) -> list[tuple[Target, Endpoint]]:
    """The target's route for the path, then its fallbacks' (a 404 when the target has none)."""
    endpoint = target.find_endpoint(path)
    if endpoint is None:
        raise ProxyError(404, f"No route for '{path}' on target '{target.name}'", code="unknown_route")
    candidates = [(target, endpoint)]
    for name in target.fallback:
        fallback = state.config.targets[name]
        fallback_endpoint = fallback.find_endpoint(path)
        # A client limited to some targets never falls back outside them.
        if fallback_endpoint is not None and (client.targets is None or name in client.targets):
            candidates.append((fallback, fallback_endpoint))
    return candidates


def _choose_target(state: RoutingState, request: web.BaseRequest, context: RequestContext) -> Target:
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


def _check_method(method: str, endpoint: Endpoint) -> None:
    if method not in endpoint.methods:
        allowed = ", ".join(sorted(endpoint.methods))
        raise ProxyError(
            405,
            f"Method {method} is not allowed on '{endpoint.incoming_path}' (allowed: {allowed})",
            code="method_not_allowed",
            headers={"Allow": allowed},
        )


def _origin_form(request: web.BaseRequest) -> str:
    """The request target's path and query, as sent; an absolute-form target (http://host/path)
    gives its path and query."""
    raw = request.raw_path
    if raw.startswith("/"):
        return raw
    url = request.rel_url
    return f"{url.raw_path}?{url.raw_query_string}" if url.raw_query_string else url.raw_path


def _apply_model_alias(context: RequestContext, target: Target) -> None:
    model = context.body.get("model") if target.model_aliases else None
    if isinstance(model, str) and model in target.model_aliases:
        context.body["model"] = target.model_aliases[model]


def _settle(limiter: Limiter, grant: Grant, context: RequestContext) -> None:
    limiter.finish(grant, (context.prompt_tokens or 0) + (context.completion_tokens or 0))


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
