"""Guards put into a route's chains, where the text they read is: at the pivot of a translated
route (after the request link that gives OpenAI Chat, before the answer link that takes it), or
around a pass-through route whose API a view reads (TGI's /generate, a server's chat completions).
Also the tails of the answer chains, which a block answered as the assistant goes through."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from mooltiproxy.config.chains import chained_mapper, chained_translators
from mooltiproxy.config.plugin_specs import StreamTranslator
from mooltiproxy.config.settings import Endpoint, Mapper, StreamTranslatorFactory
from mooltiproxy.core.accelerators import dumps
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.mapping import Note, Streamed
from mooltiproxy.guardrails.guard import Guard, GuardBlocked, Hit, screen
from mooltiproxy.guardrails.route import RouteGuards, Screening
from mooltiproxy.guardrails.stream import StreamScreen
from mooltiproxy.guardrails.views import PIVOT_VIEW, TGI_VIEW, View

log = logging.getLogger("mooltiproxy.guards")

SCREENING = Note[Screening]("screening")

Kinds = Sequence[tuple[str | None, str | None]]  # each link's (takes, gives)


def position_of(kinds: Kinds, kind: str) -> int | None:
    """Where in a chain the payloads are of this kind: after the last link giving it, else before
    the first taking it; None for a chain that never carries it."""
    gives = [index for index, (_, given) in enumerate(kinds) if given == kind]
    if gives:
        return gives[-1] + 1
    return next((index for index, (taken, _) in enumerate(kinds) if taken == kind), None)


def guard_point(requests: Kinds, answers: Kinds) -> tuple[View, int, int] | None:
    """Where a translated route's guards go: at the pivot when both chains carry it, else where
    both carry TGI's own API (OpenAI's completions onto /generate); None when neither."""
    for view in (PIVOT_VIEW, TGI_VIEW):
        at_request, at_answer = position_of(requests, view.name), position_of(answers, view.name)
        if at_request is not None and at_answer is not None:
            return view, at_request, at_answer
    return None


def pass_through_view(incoming: str, upstream: str) -> View | None:
    """The API a pass-through route relays, when a view reads it."""
    if upstream.endswith(("/generate", "/generate_stream")):
        return TGI_VIEW
    if incoming.endswith("/chat/completions") or upstream.endswith("/chat/completions"):
        return PIVOT_VIEW
    return None


def hits_of(context: Any) -> Hit:
    """Each hit logged (the guard, its action, the rule; never the text) and counted."""

    def hit(guard: Guard, rule: str) -> None:
        route = context.endpoint.incoming_path if context.endpoint is not None else "-"
        log.warning(
            "guard %s: %s (rule %s) on %s, request %s", guard.name, guard.action, rule, route, context.request_id
        )
        context.guard_hit(guard.name, guard.action)

    return hit


def _chosen(route: RouteGuards, body: Any) -> tuple[Guard, ...]:
    """The guards a client adds by name (its body's `guards`), which the route must offer."""
    asked = body.get("guards") if isinstance(body, dict) else None
    if asked is None:
        return ()
    if not route.choosable:
        raise ProxyError(400, "This route lets clients choose no guards", code="invalid_request", param="guards")
    if not isinstance(asked, list) or not all(isinstance(name, str) and name in route.choosable for name in asked):
        offered = ", ".join(route.choosable)
        raise ProxyError(400, f"`guards` must list guards this route offers: {offered}", param="guards")
    return tuple(route.choosable[name] for name in asked if route.choosable[name] not in route.guards)


def _items(payload: Any) -> list[Any]:
    """The payloads of a fan-out (a list), or the one payload."""
    return payload if isinstance(payload, list) else [payload]


def request_link(route: RouteGuards, *, last: bool) -> Mapper:
    """Screens the request's text with the request guards; the classifiers' texts are left for
    the engine, which awaits them before the call."""
    view = route.view

    def screen_request(payload: Any, endpoint: Endpoint, context: Any) -> Any:
        guards = route.guards + _chosen(route, context.body)
        first = _items(payload)[0]
        streamed = isinstance(payload, Streamed) or view.streams(first, endpoint.upstream_path.endswith("_stream"))
        model = first.get("model") or context.target_info.model_id or ""
        screening = context.notes[SCREENING] = Screening(guards, streamed, view.counts_usage(first), str(model))
        hit = hits_of(context)
        for guard in guards:
            if not guard.on_requests:
                continue
            for item in _items(payload):
                if guard.classifier is not None:
                    texts = view.user_texts(item)
                    if texts:
                        screening.classify.append((guard, texts))
                    continue
                for (holder, key), _ in list(view.request_places(item)):
                    holder[key] = screen(guard, holder[key], hit, streamed)
        if route.choosable and isinstance(payload, dict):
            payload.pop("guards", None)
        # A pass-through route's payload goes as it is, to the stream path when streamed.
        return Streamed(payload) if last and streamed else payload

    return screen_request


def answer_link(route: RouteGuards) -> Mapper:
    view = route.view

    def screen_answer(payload: Any, endpoint: Endpoint, context: Any) -> Any:
        screening = context.notes.get(SCREENING)
        hit = hits_of(context)
        for guard in screening.guards if screening is not None else route.guards:
            if not (guard.on_answers and guard.rules):
                continue
            try:
                for item in _items(payload):
                    for holder, key in list(view.answer_places(item)):
                        given = holder[key]
                        holder[key] = screen(guard, given, hit)
                        if holder[key] != given:
                            view.scrub(item)
            except GuardBlocked:
                if not guard.answer_blocks:
                    raise
                for item in _items(payload):
                    view.answer_with(item, guard.message)
                break
        return payload

    return screen_answer


def _stream_screen(route: RouteGuards, context: Any) -> StreamScreen:
    screening = context.notes.get(SCREENING)
    return StreamScreen(route.view, screening.guards if screening is not None else route.guards, hits_of(context))


class GuardedStream(StreamTranslator):
    """A link of a translated stream where the guards read it: the chunks before it, screened;
    the framing is the links' around it. First in its chain (`raw`), it reads the target's events
    as they came, and hands the next link their JSON as it would have read it."""

    frames = False

    def __init__(self, route: RouteGuards, context: Any, raw: bool = False):
        self._view = route.view
        self._screen = _stream_screen(route, context)
        self._raw = raw

    def event(self, data: Any) -> list[Any]:
        if not self._screen:
            return [data]
        if not self._raw:
            return self._screen.chunk(data) if isinstance(data, dict) else [data]
        event = self._view.decode(data)
        if event is None or "error" in event:  # the end, or the target's error: the next link's to read
            return [data]
        return [dumps(chunk).decode() for chunk in self._screen.chunk(event)]

    def end(self) -> list[Any]:
        chunks = self._screen.end()
        return [dumps(chunk).decode() for chunk in chunks] if self._raw else chunks


class ViewStream(StreamTranslator):
    """The stream of a pass-through route a view reads: the target's events, screened, framed as
    the target framed them. An error event is relayed as the target sent it, and ends the stream."""

    def __init__(self, view: View, screen: StreamScreen | None):
        self._view = view
        self._screen = screen
        self.done = view.done

    def event(self, data: Any) -> list[Any]:
        event = data if isinstance(data, dict) else self._view.decode(data)
        if event is None or "error" in event:
            self.finished = self.complete = True
            return [] if event is None else [event]
        self.usage = self._view.usage_of(event) or self.usage
        if self._view.ends(event):
            self.finished = self.complete = True
        return self._screen.chunk(event) if self._screen else [event]

    def end(self) -> list[Any]:
        return self._screen.end() if self._screen else []

    def error_frame(self, error: ProxyError) -> bytes:
        return self._view.error_frame(error)


def route_guards(
    guards: tuple[Guard, ...],
    choosable: Mapping[str, Guard],
    view: View,
    answer_tail: Sequence[Mapper] = (),
    stream_tail: Sequence[StreamTranslatorFactory] = (),
    tail_reads_raw: bool = False,
) -> RouteGuards:
    tail = chained_translators(stream_tail) if stream_tail else lambda endpoint, context: ViewStream(view, None)
    answers = chained_mapper(answer_tail) if answer_tail else None
    return RouteGuards(guards, choosable, view, tail, answers, tail_reads_raw)


def guarded_chains(
    route: RouteGuards,
    request_links: list[Mapper],
    answer_links: list[Mapper],
    translators: list[StreamTranslatorFactory] | None,
    positions: tuple[int, int] | None,
) -> tuple[list[Mapper], list[Mapper], list[StreamTranslatorFactory]]:
    """The chains with the guards' links in: at the pivot (`positions`, in the request chain and
    in the answer chain), or, on a pass-through route (None), as its only links."""
    if positions is None:

        def stream(endpoint: Endpoint, context: Any) -> ViewStream:
            return ViewStream(route.view, _stream_screen(route, context))

        return [request_link(route, last=True)], [answer_link(route)], [stream]
    at_request, at_answer = positions
    guarded_translators: list[StreamTranslatorFactory] = []
    if translators is not None:
        guarded_translators = [
            *translators[:at_answer],
            lambda endpoint, context: GuardedStream(route, context, raw=at_answer == 0),
            *translators[at_answer:],
        ]
    return (
        [*request_links[:at_request], request_link(route, last=False), *request_links[at_request:]],
        [*answer_links[:at_answer], answer_link(route), *answer_links[at_answer:]],
        guarded_translators,
    )
