"""Server-sent events: reading an upstream's stream, framing the proxy's own events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from mooltiproxy.core.accelerators import dumps
from mooltiproxy.core.events import json_event

__all__ = ["event_batches", "frame", "json_event", "named_event"]  # json_event: for plug-ins, as before


def frame(payload: Any) -> bytes:
    """An event with this JSON payload as its data; bytes are an event already framed (a named one)."""
    if isinstance(payload, bytes):
        return payload
    return b"data: " + dumps(payload) + b"\n\n"


def named_event(name: str, payload: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(payload) + b"\n\n"


def _data_value(line: bytes) -> str:
    value = line[5:]
    return (value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace")


async def event_batches(content: AsyncIterator[bytes]) -> AsyncIterator[list[str]]:
    """The `data` of the events each upstream read completes, as they arrive (one list per read,
    so a burst of events is translated and written at once); comments (`:` keep-alives) and
    other fields are skipped."""
    buffer = b""
    data: list[str] = []
    async for chunk in content:
        *lines, buffer = (buffer + chunk).split(b"\n")
        events = []
        for line in lines:
            line = line.rstrip(b"\r")
            if not line:
                if data:
                    events.append("\n".join(data))
                    data = []
            elif line.startswith(b"data:"):
                data.append(_data_value(line))
        if events:
            yield events
    if buffer.startswith(b"data:"):
        data.append(_data_value(buffer.rstrip(b"\r")))
    if data:
        yield ["\n".join(data)]
