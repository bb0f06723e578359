"""An upstream event's data read as the JSON object it must be, for every reader of a stream."""

from __future__ import annotations

from typing import Any

from mooltiproxy.core.accelerators import loads
from mooltiproxy.core.errors import ProxyError


def json_event(data: str) -> dict[str, Any]:
    """An upstream event's data as the JSON object it must be; anything else is the target's 502."""
    try:
        event = loads(data)
    except ValueError:
        raise ProxyError(502, "The target sent an event that is not JSON", code="upstream_error") from None
    if not isinstance(event, dict):
        raise ProxyError(502, "The target sent an unexpected event", code="upstream_error")
    return event
