"""The OpenAI chat completion that every front's answer chain starts from."""

from __future__ import annotations

from typing import Any


def first_choice(payload: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(choice, message) of a completion's first choice; empty ones when it has none."""
    choice = (payload.get("choices") or [{}])[0] if isinstance(payload, dict) else {}
    return choice, choice.get("message") or {}
