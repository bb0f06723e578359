"""Forwarding one request to one target: map the request, call the upstream, then map the answer,
translate its stream, or relay it as it comes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from aiohttp import web
from multidict import CIMultiDictProxy

from mooltiproxy.config.guarded_routes import SCREENING, hits_of
from mooltiproxy.config.settings import Endpoint, Mapper, StreamTranslatorFactory, SystemSettings, Target
from mooltiproxy.core.accelerators import dumps, loads
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.mapping import FanOut, Streamed
from mooltiproxy.core.metrics import Metrics, Series
from mooltiproxy.forwarding.exchange import Exchange
from mooltiproxy.forwarding.headers import forwarding, never_forwarded, upstream_request_headers
from mooltiproxy.forwarding.relay import relay
from mooltiproxy.forwarding.target_info import TargetInfos
from mooltiproxy.forwarding.upstream import UpstreamPool
from mooltiproxy.forwarding.usage import UsageTail
from mooltiproxy.guardrails.classifier import ClassifierFailed, Classifiers
from mooltiproxy.guardrails.guard import BLOCK, GuardBlocked
from mooltiproxy.guardrails.route import RouteGuards, Screening
from mooltiproxy.serving.context import RequestContext
from mooltiproxy.serving.responses import KeepAlives
from mooltiproxy.translation.refusals import upstream_error
from mooltiproxy.translation.streaming import stream_events, stream_translated

log = logging.getLogger("mooltiproxy.proxy")

_DEBUG_BODY_LIMIT = 64 * 1024


class UpstreamCall(NamedTuple):
    bodies: Sequence[bytes | None]  # encoded: the mapper's payloads are not kept while the target works
    mapped: bool = False  # the request mapper made the bodies (else: the client's body, relayed)
    fanned_out: bool = False
    streamed: bool = False


class Forwarder:
    def __init__(
        self,
        pool: UpstreamPool,
        infos: TargetInfos,
        authorizations: dict[str, str | None],
        metrics: Metrics,
        system: SystemSettings,
        chain_header: str,
        classifiers: Classifiers,
        key_headers: tuple[str, ...] = (),
    ):
        self._pool = pool
        self._classifiers = classifiers
        self._dropped = never_forwarded(key_headers)
        self._infos = infos
        self._chain_header = chain_header  # where trusted proxies name the client
        self._authorizations = authorizations
        self._metrics = metrics
        self._active_streams: dict[str, Series] = {}  # by target
        self._debug = system.debug
        self._client_timeout = system.client_timeout
        # One timer for the keep-alives of every stream (None: system.stream_keep_alive 0, never).
        self._keep_alives = KeepAlives(system.stream_keep_alive) if system.stream_keep_alive else None
        self._scheme = "https" if system.ssl else "http"

    async def forward(
        self,
        request: web.BaseRequest,
        context: RequestContext,
        target: Target,
        endpoint: Endpoint,
        query: str,
        *,
        can_fall_back: bool,
        via_trusted_proxy: bool,
    ) -> web.StreamResponse:
        context.target, context.endpoint, context.answered_by = target, endpoint, target.name
        context.notes.clear()  # a fallback target maps the request afresh
        if endpoint.request_mapper is not None:
            context.target_info = self._infos.last_known(target.name)
        try:
            call = self._map_request(context, endpoint)
            screening = context.notes.get(SCREENING)
            if screening is not None and screening.classify:
                await self._classify(screening, context)
        except GuardBlocked as block:
            if not block.guard.answer_blocks or endpoint.guarding is None:
                raise
            return await self._answer_blocked(request, context, endpoint, endpoint.guarding, block)
        headers = upstream_request_headers(
            request.headers,
            self._authorizations[target.name],
            self._dropped,
            json_body=endpoint.request_mapper is not None,
            reads_answer=endpoint.answer_mapper is not None,
        )
        headers["X-Request-ID"] = context.request_id
        forwarding(
            headers,
            request.remote or "unknown",
            self._scheme,
            peer_is_trusted=via_trusted_proxy,
            chain_header=self._chain_header,
        )

        # A translated route sends the target only what its mapper built: the front's query string
        # (such as ?beta=true) means nothing there.
        query = query if endpoint.request_mapper is None else ""

        def exchange(path: str) -> Exchange:
            return Exchange(
                self._pool.client(target.name),
                target,
                self._pool.balancer(target.name),
                request.method,
                f"{path}?{query}" if query else path,
                headers,
                can_fall_back=can_fall_back,
            )

        if call.streamed:
            if endpoint.stream_path is None or endpoint.stream_translator is None:
                raise ProxyError(400, "Streaming is not supported on this endpoint", param="stream")
            translators = endpoint.stream_translator
            return await self._stream(request, context, endpoint, translators, call, exchange(endpoint.stream_path))
        if endpoint.answer_mapper is None:
            return await self._relay(request, context, call, exchange(endpoint.upstream_path))
        return await self._read_and_map(
            context, endpoint, endpoint.answer_mapper, call, exchange(endpoint.upstream_path)
        )

    async def _relay(
        self, request: web.BaseRequest, context: RequestContext, call: UpstreamCall, exchange: Exchange
    ) -> web.StreamResponse:
        upstream = await exchange.open(call.bodies[0])
        context.upstream_seconds = exchange.seconds
        context.upstream_status, context.upstream_headers = upstream.status, upstream.headers
        if upstream.status == 404:  # relayed as it is; the operator is told what was asked
            log.warning(
                "target %s answered 404 to %s (is its url right? an extra /v1 is a common cause)",
                exchange.target.name,
                exchange.tried,
            )
        _tokens_from_headers(context, upstream.headers)
        # (not .content_type, which parses the header every time it is read)
        streaming = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
        if streaming:
            self._streams_of(exchange.target.name).add(1)
        # A key with a token limit: the usage the answer reports is read from its last bytes.
        reported = context.prompt_tokens is not None or context.completion_tokens is not None
        encoded = "Content-Encoding" in upstream.headers
        tail = UsageTail() if context.reads_usage and not reported and not encoded else None
        try:
            return await relay(request, context, upstream, exchange.target, self._client_timeout, tail)
        finally:
            upstream.release()
            if streaming:
                self._streams_of(exchange.target.name).add(-1)
            if tail is not None:
                context.prompt_tokens, context.completion_tokens = tail.tokens()

    async def _stream(
        self,
        request: web.BaseRequest,
        context: RequestContext,
        endpoint: Endpoint,
        translators: StreamTranslatorFactory,
        call: UpstreamCall,
        exchange: Exchange,
    ) -> web.StreamResponse:
        body = call.bodies[0]
        for last_try in (False, True):
            translator = translators(endpoint, context)
            self._streams_of(exchange.target.name).add(1)
            try:
                response = await stream_translated(
                    request, context, exchange, body, translator, self._client_timeout, self._keep_alives
                )
            except ProxyError as error:  # the stream never started: the client gets a plain error
                retry = None if last_try else self._on_error(endpoint, error, call, body, context)
                if retry is None:
                    raise
                body = self._encode(endpoint, retry)
                continue
            finally:
                self._streams_of(exchange.target.name).add(-1)
                context.upstream_seconds = exchange.seconds
            usage = translator.usage
            if usage:
                context.prompt_tokens, context.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
            return response
        raise AssertionError("unreachable")

    async def _read_and_map(
        self, context: RequestContext, endpoint: Endpoint, answer_mapper: Mapper, call: UpstreamCall, exchange: Exchange
    ) -> web.Response:
        bodies, name = call.bodies, exchange.target.name
        for last_try in (False, True):
            answers = await exchange.read_all(bodies)
            context.upstream_seconds = exchange.seconds
            failed = next((answer for answer in answers if not 200 <= answer.status < 300), None)
            if failed is None:
                break
            self._debug_body("error from upstream for %s", endpoint.incoming_path, failed.body)
            retry = None
            if not (last_try or call.fanned_out):
                retry = self._on_error(
                    endpoint, upstream_error(failed.status, failed.body, name, exchange.tried), call, bodies[0], context
                )
            if retry is None:
                # Raised as made, never held in a local: an exception this frame holds would keep the
                # frame (and the bodies) alive in a reference cycle until the garbage collector runs.
                raise upstream_error(failed.status, failed.body, name, exchange.tried)
            bodies = [self._encode(endpoint, retry)]
        context.upstream_status, context.upstream_headers = answers[0].status, answers[0].headers
        context.answer_headers = [answer.headers for answer in answers]
        _tokens_from_headers(context, answers[0].headers)  # what the answer's usage says wins
        payloads = [self._parse_answer(answer.body, endpoint, exchange.target) for answer in answers]
        payload = FanOut(payloads) if call.fanned_out else payloads[0]
        mapped = self._apply(endpoint.answer_mapper_name, answer_mapper, payload, endpoint, context)
        usage = mapped.get("usage") if isinstance(mapped, dict) else None
        if isinstance(usage, dict):
            context.prompt_tokens, context.completion_tokens = (
                usage.get("prompt_tokens"),
                usage.get("completion_tokens"),
            )
        body = dumps(mapped)
        self._debug_body("answer mapped by %s", endpoint.answer_mapper_name, body)
        return web.Response(status=answers[0].status, body=body, content_type="application/json")

    async def _classify(self, screening: Screening, context: RequestContext) -> None:
        """The classifier guards, in order: a flagged text blocks (or is only logged); a classifier
        that fails blocks or lets through as its guard says."""
        hit = hits_of(context)
        for guard, texts in screening.classify:
            classifier = guard.classifier
            assert classifier is not None
            try:
                flagged = await self._classifiers.flagged(classifier, texts)
            except ClassifierFailed as failure:
                what = "refused (on_error: closed)" if classifier.fail_closed else "let through (on_error: open)"
                log.warning("guard %s: its classifier failed (%s); the request is %s", guard.name, failure, what)
                context.guard_hit(guard.name, "classifier_error")
                if classifier.fail_closed:
                    raise ProxyError(
                        503,
                        f"Guard '{guard.name}' could not check this request: its classifier did not answer",
                        code="guard_unavailable",
                    ) from None
                continue
            if flagged:
                hit(guard, "classifier")
                if guard.action == BLOCK:
                    raise guard.blocked(screening.streamed)

    async def _answer_blocked(
        self,
        request: web.BaseRequest,
        context: RequestContext,
        endpoint: Endpoint,
        guarding: RouteGuards,
        block: GuardBlocked,
    ) -> web.StreamResponse:
        """A guard's message as the assistant's reply, written in the client's API by the rest of
        the answer chain; the target is never called."""
        screening = context.notes.get(SCREENING)
        view, message = guarding.view, block.guard.message
        model = screening.model if screening is not None else ""
        if block.streamed:
            events: list[Any] = view.blocked_events(message, model, screening is not None and screening.counts_usage)
            if guarding.tail_reads_raw:  # as the target would have sent them
                events = [dumps(event).decode() for event in events]
            translator = guarding.stream_tail(endpoint, context)
            return await stream_events(request, context, translator, events, self._client_timeout)
        payload = view.blocked_answer(message, model)
        if guarding.answer_tail is not None:
            payload = self._apply(endpoint.answer_mapper_name, guarding.answer_tail, payload, endpoint, context)
        return web.Response(body=dumps(payload), content_type="application/json")

    def _streams_of(self, target: str) -> Series:
        """The target's gauge of streams in flight, its labels rendered once."""
        series = self._active_streams.get(target)
        if series is None:
            series = self._active_streams[target] = self._metrics.series("mooltiproxy_active_streams", target=target)
        return series

    def _on_error(
        self, endpoint: Endpoint, error: ProxyError, call: UpstreamCall, sent: bytes | None, context: RequestContext
    ) -> Any:
        """The answer mapper's error hook: a payload to try once more, None, or its own error."""
        if endpoint.error_hook is None or not call.mapped or sent is None:
            return None
        return self._apply(endpoint.answer_mapper_name, endpoint.error_hook, error, loads(sent), context)

    def _map_request(self, context: RequestContext, endpoint: Endpoint) -> UpstreamCall:
        """What to send upstream: the body as it came, or what the request mapper made of it."""
        if endpoint.request_mapper is None:
            self._debug_body("request body for %s", endpoint.incoming_path, context.raw_body)
            return UpstreamCall([context.raw_body or None])
        mapped = self._apply(endpoint.request_mapper_name, endpoint.request_mapper, context.body, endpoint, context)
        fanned_out = isinstance(mapped, FanOut)
        if fanned_out and endpoint.answer_mapper is None:
            raise ProxyError(500, "A fan-out needs an answer mapper to merge the answers", code="mapper_error")
        payloads = list(mapped) if fanned_out else [mapped]
        bodies = [self._encode(endpoint, payload) for payload in payloads]
        return UpstreamCall(bodies, mapped=True, fanned_out=fanned_out, streamed=isinstance(mapped, Streamed))

    def _encode(self, endpoint: Endpoint, payload: Any) -> bytes:
        body = dumps(payload)
        self._debug_body("request mapped by %s", endpoint.request_mapper_name, body)
        return body

    def _parse_answer(self, answer: bytes, endpoint: Endpoint, target: Target) -> Any:
        self._debug_body("answer from upstream for %s", endpoint.incoming_path, answer)
        try:
            return loads(answer)
        except ValueError:
            raise ProxyError(502, f"Target '{target.name}' answered invalid JSON", code="upstream_error") from None

    def _apply(self, name: str, mapper: Mapper, payload: Any, endpoint: Any, context: RequestContext) -> Any:
        try:
            return mapper(payload, endpoint, context)
        except ProxyError:
            raise
        except Exception as exc:
            # A bug in a mapper: the operator needs its name, the client only a 500.
            log.error(
                "mapper %s failed on %s: %s: %s",
                name,
                context.endpoint.incoming_path if context.endpoint else "-",
                type(exc).__name__,
                exc,
                exc_info=self._debug,
            )
            raise ProxyError(500, f"The proxy failed to translate this request ({name})", code="mapper_error") from None

    def _debug_body(self, message: str, name: str, body: bytes | None) -> None:
        if self._debug and body:
            text = body[:_DEBUG_BODY_LIMIT].decode("utf-8", "replace")
            log.debug(message + ": %s", name, text)


def _tokens_from_headers(context: RequestContext, headers: CIMultiDictProxy[str]) -> None:
    """TGI says its token counts in headers (x-prompt-tokens, x-generated-tokens)."""
    try:
        if "x-generated-tokens" in headers:
            context.completion_tokens = int(headers["x-generated-tokens"])
        if "x-prompt-tokens" in headers:
            context.prompt_tokens = int(headers["x-prompt-tokens"])
    except ValueError:
        pass
