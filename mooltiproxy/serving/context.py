"""The small object a request carries through the pipeline, and what mappers see of it (their third
argument)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from multidict import CIMultiDictProxy

from mooltiproxy.config.settings import UNKNOWN, Endpoint, Target, TargetInfo
from mooltiproxy.core.accelerators import loads
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.mapping import Notes
from mooltiproxy.core.sealing import Sealer

_UNPARSED = object()


class MapperContext(Protocol):
    """What a mapper sees of its request (the RequestContext below, less the engine's bookkeeping).

    `request_id`: X-Request-ID (the client's, or one made up); `client_name`: the name of the
    client's key; `body`: the client's original JSON body; `target` / `endpoint`: where the request
    goes; `target_info`: what is known of the target's model (its context length, the stop
    sequences it takes); `upstream_status` / `upstream_headers`: the (first) upstream answer's;
    `answer_headers`: the headers of every answer of a fan-out; `notes`: where a request mapper
    leaves notes for the answer mapper of the same request.
    """

    request_id: str
    client_name: str
    target: Target | None
    endpoint: Endpoint | None
    target_info: TargetInfo
    upstream_status: int | None
    upstream_headers: CIMultiDictProxy[str] | None
    answer_headers: list[CIMultiDictProxy[str]]
    notes: Notes
    sealer: Sealer  # seals what a client carries and gives back unaltered (a thinking block's signature)

    @property
    def body(self) -> Any: ...

    def count(self, event: str, amount: int = 1) -> None:
        """Counts what a mapper did to the request, in the proxy's metrics (by route and event)."""


class RequestContext:
    """The request as the engine carries it; mappers see it as a MapperContext."""

    __slots__ = (
        "request_id",
        "client_ip",
        "client_name",
        "answered_by",
        "upstream_seconds",
        "prompt_tokens",
        "completion_tokens",
        "target",
        "endpoint",
        "target_info",
        "raw_body",
        "held_bytes",
        "rate_headers",
        "settle",
        "reads_usage",
        "upstream_status",
        "upstream_headers",
        "answer_headers",
        "notes",
        "sealer",
        "events",
        "guard_hits",
        "_body",
    )

    def __init__(self, client_ip: str, request_id: str, sealer: Sealer):
        self.request_id = request_id
        self.client_ip = client_ip
        self.client_name = "-"
        # Filled in on the way, for the access log and the metrics.
        self.answered_by: str | None = None
        self.upstream_seconds: float | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.target: Target | None = None
        self.endpoint: Endpoint | None = None
        self.target_info = UNKNOWN  # its context length, for a translated request
        self.raw_body: bytes = b""
        self.held_bytes = 0  # of the process's body budget
        # The rate-limit headers of a limited key's answer (they replace a target's own).
        self.rate_headers: dict[str, str] | None = None
        # Run once the request has ended, however it ended (its tokens charged, its slots freed).
        self.settle: Callable[[], None] | None = None
        self.reads_usage = False  # a token limit applies: read what a relayed answer reports
        self.upstream_status: int | None = None
        self.upstream_headers: CIMultiDictProxy[str] | None = None
        self.answer_headers: list[CIMultiDictProxy[str]] = []
        self.notes = Notes()
        self.sealer = sealer
        self.events: dict[str, int] | None = None  # what mappers counted, made on the first count
        self.guard_hits: dict[tuple[str, str], int] | None = None  # (guard, action) -> hits
        self._body: Any = _UNPARSED

    @property
    def body(self) -> Any:
        """The client's original JSON body, parsed once on first use."""
        if self._body is _UNPARSED:
            self._body = parse_json_object(self.raw_body)
        return self._body

    def count(self, event: str, amount: int = 1) -> None:
        if self.events is None:
            self.events = {}
        self.events[event] = self.events.get(event, 0) + amount

    def guard_hit(self, guard: str, action: str) -> None:
        if self.guard_hits is None:
            self.guard_hits = {}
        self.guard_hits[guard, action] = self.guard_hits.get((guard, action), 0) + 1

    def keep_parsed_body_only(self) -> None:
        """For a request only mappers will read: its bytes are let go once parsed, rather than held
        (with the prompt and the upstream request made from them) until the answer is sent."""
        if self._body is _UNPARSED:
            self._body = parse_json_object(self.raw_body)
        self.raw_body = b""


def parse_json_object(raw: bytes) -> dict:
    """The request body as a JSON object, or a 400 ProxyError saying what is wrong with it."""
    if not raw:
        raise ProxyError(400, "The request body is empty; expected a JSON object", code="invalid_json")
    try:
        value = loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProxyError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise ProxyError(400, "The request body must be a JSON object", code="invalid_json")
    return value
