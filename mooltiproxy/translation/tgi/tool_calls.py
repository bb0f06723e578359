"""Tool calls read back from the text a model generated on TGI's /generate.

`hermes` is the format of Hermes, Qwen 2.5 and Qwen 3 models: each call a JSON object
`{"name": ..., "arguments": {...}}` between `<tool_call>` and `</tool_call>`. The text around the
calls stays the answer's content; a call that is not valid JSON stays text too, never an error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mooltiproxy.core.ids import unique_id

# Each parser's call pattern; its first group is the call's JSON.
_CALLS = {"hermes": re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)}


def parse_tool_calls(text: str, parser: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, OpenAI tool_calls) of a generated text."""
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    position = 0
    for match in _CALLS[parser].finditer(text):
        call = _call(match.group(1))
        if call is None:
            continue  # malformed: left in the text
        kept.append(text[position : match.start()])
        position = match.end()
        calls.append(call)
    kept.append(text[position:])
    content = "".join(kept).strip()
    return (content or None) if calls else text, calls


def _call(source: str) -> dict[str, Any] | None:
    try:
        value = json.loads(source)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    encoded = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": f"call_{unique_id()}", "type": "function", "function": {"name": value["name"], "arguments": encoded}}
