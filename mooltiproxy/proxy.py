"""The request pipeline: guard -> route -> map request -> upstream -> map answer or relay."""

from __future__ import annotations

import json
import logging
import time

from aiohttp import web

from .context import RequestContext
from .cors import is_preflight, preflight_response
from .errors import ProxyError, error_response
from .guard import Guard, parse_address
from .headers import upstream_request_headers
from .logs import log_access
from .relay import relay
from .routing import split_request_target
from .settings import Config, Endpoint, Target
from .upstream import UpstreamPool, send, upstream_failures

log = logging.getLogger("mooltiproxy.proxy")

_DEBUG_BODY_LIMIT = 64 * 1024
_CLIENT_CLOSED = 499  # nginx's convention, for the access log only


class Proxy:
    def __init__(self, config: Config, master_key: str, pool: UpstreamPool):
        self._config = config
        self._guard = Guard(config.guard, master_key)
        self._pool = pool
        self._debug = config.system.debug
        self._max_body_size = config.system.max_body_size
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
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            response = error_response(ProxyError(500, "Internal proxy error", code="internal_error"))
        finally:
            # Reached on cancellation too (the client went away): still one access line.
            log_access(
                context.client_ip,
                request.method,
                request.path,
                context.target.name if context.target else "-",
                response.status if response is not None else _CLIENT_CLOSED,
                time.perf_counter() - started,
            )
        return response

    async def _dispatch(self, request: web.BaseRequest, context: RequestContext) -> web.StreamResponse:
        address = parse_address(request.remote)
        refusal = self._guard.refusal(address)
        if refusal is not None:
            log.warning("refused %s client %s", refusal, context.client_ip)
            raise ProxyError(403, "Access denied", code=f"ip_{refusal}")
        if is_preflight(request):
            return preflight_response(request)
        if not self._guard.authorized(request.headers.get("Authorization")):
            self._guard.strike(address)
            log.warning("client %s: missing or invalid API key", context.client_ip)
            raise ProxyError(
                401,
                "Missing or invalid API key: send it as 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        target = self._choose_target(request)
        context.target = target
        path, query = split_request_target(request.raw_path)
        endpoint = target.find_endpoint(path)
        if endpoint is None:
            raise ProxyError(
                404, f"No route for '{path}' on target '{target.name}'", code="unknown_route"
            )
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
        too_large = ProxyError(
            413, f"Request body larger than {self._max_body_size} bytes", code="request_too_large"
        )
        if request.content_length is not None and request.content_length > self._max_body_size:
            raise too_large
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None

    async def _forward(
        self,
        request: web.BaseRequest,
        context: RequestContext,
        target: Target,
        endpoint: Endpoint,
        query: str,
    ) -> web.StreamResponse:
        body = context.raw_body
        if endpoint.request_mapper is not None:
            mapped = endpoint.request_mapper(context.body, endpoint, context)
            body = json.dumps(mapped).encode()
            self._debug_body("request mapped by %s", endpoint.request_mapper_name, body)
        elif self._debug and body:
            self._debug_body("request body for %s", endpoint.incoming_path, body)
        reads_answer = endpoint.answer_mapper is not None
        headers = upstream_request_headers(
            request.headers,
            self._authorizations[target.name],
            json_body=endpoint.request_mapper is not None,
            reads_answer=reads_answer,
        )
        url = f"{endpoint.upstream_url}?{query}" if query else endpoint.upstream_url
        upstream = await send(
            self._pool.session(target.name),
            target,
            request.method,
            url,
            headers,
            body or None,
            decompress=reads_answer,
        )
        context.upstream_status = upstream.status
        context.upstream_headers = upstream.headers
        try:
            if reads_answer and 200 <= upstream.status < 300:
                with upstream_failures(target):
                    answer = await upstream.read()
                return self._mapped_answer(context, endpoint, upstream.status, answer)
            return await relay(request, upstream, target.name, decoded=reads_answer)
        finally:
            upstream.release()

    def _mapped_answer(
        self, context: RequestContext, endpoint: Endpoint, status: int, answer: bytes
    ) -> web.Response:
        self._debug_body("answer from upstream for %s", endpoint.incoming_path, answer)
        try:
            payload = json.loads(answer)
        except ValueError:
            raise ProxyError(
                502, f"Target '{context.target.name}' answered invalid JSON", code="upstream_error"
            ) from None
        mapped = endpoint.answer_mapper(payload, endpoint, context)
        body = json.dumps(mapped).encode()
        self._debug_body("answer mapped by %s", endpoint.answer_mapper_name, body)
        return web.Response(status=status, body=body, content_type="application/json")

    def _debug_body(self, message: str, name: str, body: bytes) -> None:
        if self._debug:
            text = body[:_DEBUG_BODY_LIMIT].decode("utf-8", "replace")
            log.debug(message + ": %s", name, text)
