"""A target's refusal read as the error the client gets: its status, and its message in whichever of
the common JSON shapes the target wrote it."""

from __future__ import annotations

import json

from mooltiproxy.core.errors import ProxyError


def refusal_status(status: int) -> int:
    """The status a client gets for a target's refusal: a request the target found invalid (TGI's
    422, a 4xx of any other kind) is the client's 400 `invalid_request_error`, as OpenAI and Anthropic
    answer it; rate limits, sizes and the target's own failures keep theirs."""
    return 400 if status in (400, 422) else status


def upstream_error(status: int, body: bytes, target_name: str, tried: str = "") -> ProxyError:
    """An upstream's error answer as an OpenAI-shaped error with the same status.

    TGI answers `{"error": "...", "error_type": "..."}`; an OpenAI-compatible upstream already
    answers `{"error": {"message": ...}}`; anything else names the target and the request tried,
    and quotes the answer as text.
    """
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        error_type = payload.get("error_type")
        code = error_type if isinstance(error_type, str) else None
        return ProxyError(refusal_status(status), payload["error"], code=code)
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        message, code = str(error.get("message", "")), error.get("code")
        return ProxyError(
            refusal_status(status), message, code=code if isinstance(code, str) else None, param=error.get("param")
        )
    text = body[:1000].decode("utf-8", "replace").strip()
    message = f"Target '{target_name}' answered HTTP {status}" + (f" to {tried}" if tried else "")
    if status == 404:
        message += " (is the target's url right? An extra /v1 is a common cause)"
    return ProxyError(status, f"{message}: {text}" if text else message, code="upstream_error")
