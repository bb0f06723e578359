"""A target's refusal of a request that does not fit its context window, read in the target's own
words, and the one retry that follows: `max_tokens` clamped to the room the prompt leaves (Claude
Code asks for 32,000 whatever the model), or, when the prompt alone does not fit, the error clients
know (`context_length_exceeded`; Anthropic's `prompt is too long` on its routes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from mooltiproxy.core.errors import ContextLengthExceeded, ProxyError

_LIMIT = r"maximum context length is (?P<limit>\d+) tokens"
# Each server's words, with the limit, the prompt's tokens and (unless the prompt alone is too long)
# the new tokens asked for.
_REFUSALS = tuple(
    re.compile(pattern)
    for pattern in (
        # TGI (router/src/validation.rs: MaxTotalTokens, InputLength)
        r"must be <= (?P<limit>\d+)\. Given: (?P<prompt>\d+) `inputs` tokens and (?P<new>\d+) `max_new_tokens`",
        r"`inputs` must have less than (?P<limit>\d+) tokens\. Given: (?P<prompt>\d+)",
        # vLLM up to 0.10, SGLang, DeepSeek
        _LIMIT + r"\. However, you requested \d+ tokens \((?P<prompt>\d+) in the \w+, (?P<new>\d+) in the completion",
        # vLLM 0.11 and later (serving_engine.py `_validate_input`)
        _LIMIT + r"\. However, you requested (?P<new>\d+) output tokens and your prompt contains (?:at least )?"
        r"(?P<prompt>\d+) input tokens",
        _LIMIT + r" and your request has (?P<prompt>\d+) input tokens \((?P<new>\d+) >",
        _LIMIT + r"\. However, your request has (?P<prompt>\d+) input tokens",
    )
)


class Overflow(NamedTuple):
    limit: int
    prompt_tokens: int
    new_tokens: int


def overflow(error: ProxyError) -> Overflow | None:
    """What the target said did not fit, when the error says so."""
    if error.status not in (400, 413, 422):
        return None
    for pattern in _REFUSALS:
        found = pattern.search(error.message)
        if found is not None:
            words = found.groupdict()
            return Overflow(int(words["limit"]), int(words["prompt"]), int(words.get("new") or 0))
    return None


Sent = TypeVar("Sent")


def with_room(error: ProxyError, sent: Sent, clamped: Callable[[Sent, int], Sent]) -> Sent | None:
    """The request sent again with `clamped(sent, room)`, when only its new tokens did not fit; None
    when the error is another one. A prompt that leaves no room raises ContextLengthExceeded."""
    found = overflow(error)
    if found is None:
        return None
    room = found.limit - found.prompt_tokens
    if room < 1 or found.new_tokens == 0:
        raise ContextLengthExceeded(found.limit, found.prompt_tokens, found.new_tokens)
    return clamped(sent, room)
