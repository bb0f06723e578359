"""The pass-through mapper."""

from typing import Any


def identity(payload: Any, endpoint: Any = None) -> Any:
    """Returns the payload unchanged; an endpoint using it relays the body as bytes, unparsed."""
    return payload
