"""A guard as the config declares it, and what it does to one text: block, redact, or only say."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mooltiproxy.core.errors import ProxyError
from mooltiproxy.guardrails.rules import Rule
from mooltiproxy.guardrails.scan import Found, findings, masked

BLOCK, REDACT, LOG = "block", "redact", "log"


@dataclass(frozen=True, slots=True)
class Classifier:
    """A TEI /predict endpoint serving a sequence classifier (Prompt-Guard, say)."""

    url: str
    key: str | None  # sent as a bearer token
    label: str  # the label whose score is compared with the threshold
    threshold: float
    timeout: float
    fail_closed: bool  # the classifier down (or answering nonsense): block, rather than let through


@dataclass(frozen=True, slots=True)
class Guard:
    name: str
    type: str  # regex, pii, classifier
    on_requests: bool
    on_answers: bool
    action: str  # block, redact, log
    answer_blocks: bool  # a block answers the configured message as the assistant's reply (else a 400)
    message: str
    mask: str  # `{rule}` in it: the name of the rule that matched
    rules: tuple[Rule, ...] = ()
    classifier: Classifier | None = None

    def blocked(self, streamed: bool = False) -> GuardBlocked:
        return GuardBlocked(self, streamed)

    def described(self) -> dict[str, Any]:
        """As the admin API lists it (never the classifier's key)."""
        when = [side for side, on in (("request", self.on_requests), ("answer", self.on_answers)) if on]
        return {
            "name": self.name,
            "type": self.type,
            "when": when,
            "action": self.action,
            "block_as": "answer" if self.answer_blocks else "error",
            "rules": [rule.name for rule in self.rules],
            **({"classifier": self.classifier.url} if self.classifier is not None else {}),
        }


class GuardBlocked(ProxyError):
    """A guard's block: a 400 `guard_blocked` error naming the guard, or (block_as: answer) the
    configured message as the assistant's reply, which the engine writes in the client's API."""

    def __init__(self, guard: Guard, streamed: bool):
        super().__init__(400, f"Blocked by guard '{guard.name}': {guard.message}", code="guard_blocked")
        self.guard = guard
        self.streamed = streamed  # the client asked for a stream


# Told of every match a guard acts on: hit(guard, rule) (for the metrics and the log).
Hit = Callable[[Guard, str], None]


def act(guard: Guard, text: str, found: list[Found], hit: Hit, streamed: bool = False) -> str:
    """The text after the guard's action on what it found in it; a block raises."""
    for match in found:
        hit(guard, match.rule)
    if not found or guard.action == LOG:
        return text
    if guard.action == BLOCK:
        raise guard.blocked(streamed)
    return masked(text, found, guard.mask)


def screen(guard: Guard, text: str, hit: Hit, streamed: bool = False) -> str:
    """A whole text through one pattern guard."""
    return act(guard, text, findings(guard.rules, text), hit, streamed)
