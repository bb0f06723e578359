"""What guards do on one route, as the loader made it ready, and what they leave for the rest of
one request."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mooltiproxy.guardrails.guard import Guard
from mooltiproxy.guardrails.views import View


@dataclass(frozen=True, slots=True)
class RouteGuards:
    guards: tuple[Guard, ...]  # on every request, in order: the proxy's, the target's, the route's
    choosable: Mapping[str, Guard]  # those a client may add by name (its body's `guards`)
    view: View  # where the text they read is
    # What a block answered as the assistant goes through, the message in the view's shape: the
    # answer chain's stream translators after the guards (the view's own framing, when none), and
    # its links after them (None: none).
    stream_tail: Callable[[Any, Any], Any]
    answer_tail: Callable[[Any, Any, Any], Any] | None = None
    tail_reads_raw: bool = False  # the stream tail's first link reads the target's events, as JSON text

    @property
    def names(self) -> list[str]:
        return [guard.name for guard in self.guards]


@dataclass(slots=True)
class Screening:
    """One request's guards, left by its request guards for its answer guards and the classifiers."""

    guards: tuple[Guard, ...]
    streamed: bool  # the client asked for a stream
    counts_usage: bool  # and for its usage in it
    model: str
    classify: list[tuple[Guard, list[str]]] = field(default_factory=list)  # awaited before the call
