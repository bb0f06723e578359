"""TGI /generate answers -> OpenAI `text_completion` / `chat.completion` objects."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.ids import new_id
from mooltiproxy.translation.stops import cut_at_stop

FINISH_REASONS = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}


def choice_text(answer: Any, stops: Sequence[str], kept_specials: frozenset[str] = frozenset()) -> tuple[str, str, int]:
    """(text, OpenAI finish_reason, generated token count) of one TGI answer. With `kept_specials`,
    the text is read from the answer's tokens, keeping those special tokens that generated_text
    leaves out."""
    if not isinstance(answer, dict) or not isinstance(answer.get("generated_text"), str):
        raise ProxyError(502, "The target's answer has no generated_text", code="upstream_error")
    details = answer.get("details") or {}
    text = answer["generated_text"]
    tokens = details.get("tokens")
    if kept_specials and isinstance(tokens, list) and all(isinstance(token, dict) for token in tokens):
        text = "".join(
            str(token.get("text", ""))
            for token in tokens
            if not token.get("special") or token.get("text") in kept_specials
        )
    text, stopped = cut_at_stop(text, stops)
    finish_reason = "stop" if stopped else FINISH_REASONS.get(str(details.get("finish_reason")), "stop")
    return text, finish_reason, int(details.get("generated_tokens") or 0)


def header_count(headers: Mapping[str, str] | None, name: str) -> int:
    try:
        return int((headers or {}).get(name, 0))
    except ValueError:
        return 0


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_tokens(answer: Any, counted: int, headers: Mapping[str, str] | None) -> int:
    # TGI's details, else its x-generated-tokens header: real token counts either way.
    return counted or header_count(headers, "x-generated-tokens")


def envelope(kind: str, model: str, choices: list[dict], token_usage: dict[str, int]) -> dict[str, Any]:
    prefix = "chatcmpl-" if kind == "chat.completion" else "cmpl-"
    return {
        "id": new_id(prefix),
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": token_usage,
    }
