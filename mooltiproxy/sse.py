"""Server-sent events: reading an upstream's stream, framing the proxy's own events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import StreamReader

DONE = b"data: [DONE]\n\n"


def frame(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _data_value(line: bytes) -> str:
    value = line[5:]
    return (value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace")


async def event_data(content: StreamReader) -> AsyncIterator[str]:
    """The `data` of each event as it arrives; comments (`:` keep-alives) and other fields skipped."""
    buffer = b""
    data: list[str] = []
    async for chunk in content.iter_any():
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                data.append(_data_value(line))
    if buffer.startswith(b"data:"):
        data.append(_data_value(buffer.rstrip(b"\r")))
    if data:
        yield "\n".join(data)
