"""The request pipeline: guard -> route -> map request -> upstream -> map answer or relay."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .accelerators import dumps, loads
from .admin import Admin
from .context import FanOut, RequestContext, Streamed
from .cors import is_preflight, preflight_response
from .errors import ProxyError, error_response, upstream_error
from .exchange import Exchange
from .guard import Guard
from .headers import upstream_request_headers
from .logs import log_access
from .relay import relay
from .routing import split_request_target
from .settings import Config, Endpoint, Mapper, Target
from .streaming import stream_translated
from .upstream import UpstreamPool

log = logging.getLogger("mooltiproxy.proxy")


@dataclass(frozen=True, slots=True)
class _UpstreamCall:
    bodies: list[bytes | None]
    fanned_out: bool = False
    streamed: bool = False


def _with_query(url: str, query: str) -> str:
    return f"{url}?{query}" if query else url


_DEBUG_BODY_LIMIT = 64 * 1024
_CLIENT_CLOSED = 499  # nginx's convention, for the access log only


class Proxy:
    def __init__(self, config: Config, guard: Guard, admin: Admin, pool: UpstreamPool):
        self._config = config
        self._guard = guard
        self._admin = admin
        self._pool = pool
        self._debug = config.system.debug
        self._max_body_size = config.system.max_body_size
        self._client_timeout = config.system.client_timeout
        # Precomputed so the hot path only looks things up.
        self._authorizations = {
            name: f"Bearer {target.key}" if target.key else None for name, target in config.targets.items()
        }

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        context = RequestContext(request.remote or "-")
        response: web.StreamResponse | None = None
        try:
            response = await self._dispatch(request, context)
        except ProxyError as error:
            response = error_response(error)
        except ConnectionResetError:
            # The client went away while the answer was being written to it.
            response = web.Response(status=_CLIENT_CLOSED)
        except Exception as exc:
            log.error(
                "internal error on %s %s: %s: %s",
                request.method,
                request.path,
                type(exc).__name__,
                exc,
                exc_info=self._debug,
            )
            response = error_response(ProxyError(500, "Internal proxy error", code="internal_error"))
        finally:
            # Reached on cancellation too (the client went away): still one access line.
            log_access(
                context.client_ip,
                context.client_name,
                request.method,
                request.path,
                context.target.name if context.target else "-",
                response.status if response is not None else _CLIENT_CLOSED,
                time.perf_counter() - started,
            )
        return response

    async def _dispatch(self, request: web.BaseRequest, context: RequestContext) -> web.StreamResponse:
        if request.path == self._admin.health_path and request.method == "GET":
            return self._admin.health()
        address = self._guard.address_of(request)
        if address is not None:
            context.client_ip = str(address)
        refusal = self._guard.refusal(address)
        if refusal is not None:
            log.warning("refused %s client %s", refusal, context.client_ip)
            raise ProxyError(403, "Access denied", code=f"ip_{refusal}")
        if is_preflight(request):
            return preflight_response(request)
        client = self._guard.identify(request.headers.get("Authorization"))
        if client is None:
            await self._guard.strike(address)
            log.warning("client %s: missing or invalid API key", context.client_ip)
            raise ProxyError(
                401,
                "Missing or invalid API key: send it as 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        context.client_name = client.name
        path, query = split_request_target(request.raw_path)
        if path.startswith(self._admin.prefix):
            return await self._admin.handle(request, path, client)
        target = self._choose_target(request)
        context.target = target
        if client.targets is not None and target.name not in client.targets:
            raise ProxyError(
                403, f"Client '{client.name}' may not use target '{target.name}'", code="target_not_allowed"
            )
        endpoint = target.find_endpoint(path)
        if endpoint is None:
            raise ProxyError(404, f"No route for '{path}' on target '{target.name}'", code="unknown_route")
        context.endpoint = endpoint
        context.raw_body = await self._read_body(request)
        return await self._forward(request, context, target, endpoint, query)

    def _choose_target(self, request: web.BaseRequest) -> Target:
        name = request.headers.get("target") or self._config.default_target
        target = self._config.targets.get(name)
        if target is None:
            raise ProxyError(404, f"Unknown target '{name}'", code="unknown_target", param="target")
        return target

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        too_large = ProxyError(413, f"Request body larger than {self._max_body_size} bytes", code="request_too_large")
        if request.content_length is not None and request.content_length > self._max_body_size:
            raise too_large
        if request.content.is_eof():  # the usual case: the body came with the head
            return await request.read()
        try:
            async with asyncio.timeout(self._client_timeout):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        except TimeoutError:
            raise ProxyError(408, "The request body took too long to arrive", code="request_timeout") from None

    async def _forward(
        self,
        request: web.BaseRequest,
        context: RequestContext,
        target: Target,
        endpoint: Endpoint,
        query: str,
    ) -> web.StreamResponse:
        call = self._map_request(context, endpoint)
        reads_answer = endpoint.answer_mapper is not None
        headers = upstream_request_headers(
            request.headers,
            self._authorizations[target.name],
            json_body=endpoint.request_mapper is not None,
            reads_answer=reads_answer,
        )
        session = self._pool.session(target.name)
        if call.streamed:
            if endpoint.stream_url is None or endpoint.stream_translator is None:
                raise ProxyError(400, "Streaming is not supported on this endpoint", param="stream")
            exchange = Exchange(session, target, request.method, _with_query(endpoint.stream_url, query), headers)
            translator = endpoint.stream_translator(endpoint, context)
            return await stream_translated(request, exchange, call.bodies[0], translator)
        exchange = Exchange(session, target, request.method, _with_query(endpoint.upstream_url, query), headers)
        if not reads_answer:
            upstream = await exchange.open(call.bodies[0])
            context.upstream_status = upstream.status
            context.upstream_headers = upstream.headers
            try:
                return await relay(request, upstream, target)
            finally:
                upstream.release()
        answers = await exchange.read_all(call.bodies)
        failed = next((answer for answer in answers if not 200 <= answer.status < 300), None)
        if failed is not None:
            self._debug_body("error from upstream for %s", endpoint.incoming_path, failed.body)
            raise upstream_error(failed.status, failed.body, target.name)
        context.upstream_status = answers[0].status
        context.upstream_headers = answers[0].headers
        context.answer_headers = [answer.headers for answer in answers]
        payloads = [self._parse_answer(answer.body, endpoint, target) for answer in answers]
        payload = FanOut(payloads) if call.fanned_out else payloads[0]
        mapped = self._apply(endpoint.answer_mapper_name, endpoint.answer_mapper, payload, endpoint, context)
        body = dumps(mapped)
        self._debug_body("answer mapped by %s", endpoint.answer_mapper_name, body)
        return web.Response(status=answers[0].status, body=body, content_type="application/json")

    def _map_request(self, context: RequestContext, endpoint: Endpoint) -> _UpstreamCall:
        """What to send upstream: the body as it came, or what the request mapper made of it."""
        if endpoint.request_mapper is None:
            self._debug_body("request body for %s", endpoint.incoming_path, context.raw_body)
            return _UpstreamCall([context.raw_body or None])
        mapped = self._apply(endpoint.request_mapper_name, endpoint.request_mapper, context.body, endpoint, context)
        fanned_out = isinstance(mapped, FanOut)
        if fanned_out and endpoint.answer_mapper is None:
            raise ProxyError(500, "A fan-out needs an answer mapper to merge the answers", code="mapper_error")
        bodies = [dumps(payload) for payload in (mapped if fanned_out else [mapped])]
        for body in bodies:
            self._debug_body("request mapped by %s", endpoint.request_mapper_name, body)
        return _UpstreamCall(bodies, fanned_out=fanned_out, streamed=isinstance(mapped, Streamed))

    def _parse_answer(self, answer: bytes, endpoint: Endpoint, target: Target) -> Any:
        self._debug_body("answer from upstream for %s", endpoint.incoming_path, answer)
        try:
            return loads(answer)
        except ValueError:
            raise ProxyError(502, f"Target '{target.name}' answered invalid JSON", code="upstream_error") from None

    def _apply(self, name: str, mapper: Mapper, payload: Any, endpoint: Endpoint, context: RequestContext) -> Any:
        try:
            return mapper(payload, endpoint, context)
        except ProxyError:
            raise
        except Exception as exc:
            # A bug in a mapper: the operator needs its name, the client only a 500.
            log.error(
                "mapper %s failed on %s: %s: %s",
                name,
                endpoint.incoming_path,
                type(exc).__name__,
                exc,
                exc_info=self._debug,
            )
            raise ProxyError(500, f"The proxy failed to translate this request ({name})", code="mapper_error") from None

    def _debug_body(self, message: str, name: str, body: bytes | None) -> None:
        if self._debug and body:
            text = body[:_DEBUG_BODY_LIMIT].decode("utf-8", "replace")
            log.debug(message + ": %s", name, text)
