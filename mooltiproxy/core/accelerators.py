"""Optional speed-ups, used when installed: uvloop for the event loop, orjson for JSON.

MOOLTIPROXY_PURE_PYTHON=1 turns both off (the benchmark compares the two).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from types import ModuleType
from typing import Any

PURE_PYTHON = os.environ.get("MOOLTIPROXY_PURE_PYTHON") == "1"


def _optional(name: str) -> ModuleType | None:
    if PURE_PYTHON:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


orjson = _optional("orjson")
uvloop = _optional("uvloop")


def dumps(value: Any) -> bytes:
    if orjson is not None:
        try:
            encoded: bytes = orjson.dumps(value)
            return encoded
        except TypeError:  # what orjson does not take (integers beyond 64 bits, ...): the stdlib does
            pass
    return json.dumps(value, separators=(",", ":")).encode()  # compact, as orjson writes it


def loads(data: bytes | str) -> Any:
    """Raises ValueError on invalid JSON, as json.loads does."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the stdlib accepts a little more (huge integers) and words its errors better
    return json.loads(data)


def run(main: Any) -> Any:
    """asyncio.run, on uvloop when available."""
    if uvloop is not None:
        return uvloop.run(main)
    return asyncio.run(main)


def description() -> str:
    return f"event loop: {'uvloop' if uvloop else 'asyncio'}, JSON: {'orjson' if orjson else 'json'}"
