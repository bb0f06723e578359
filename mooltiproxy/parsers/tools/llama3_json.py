"""Llama 3.1, 3.2 and 3.3: the whole answer is the call(s), `{"name": ..., "parameters": {...}}`,
several separated by `;`, after an optional `<|python_tag|>`. In a stream, an answer that begins
with `{` is held until it ends, then read as calls or released as text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mooltiproxy.parsers.tools.base import Calls, WholeAnswerParser, call_of


class Llama3JsonParser(WholeAnswerParser):
    name = "llama3_json"
    prefix = "<|python_tag|>"

    def detect(self, template_source: str) -> bool:
        return self.prefix in template_source or ("ipython" in template_source and '"parameters"' in template_source)

    def parse(self, text: str, tools: Sequence[Any] = ()) -> tuple[str | None, Calls]:
        calls = _json_calls(text.strip().removeprefix(self.prefix).strip())
        return (None, calls) if calls else (text, [])


def _json_calls(body: str) -> Calls:
    """The calls of an answer that is nothing but calls, or none at all."""
    if not body.startswith("{"):
        return []
    calls = []
    decoder = json.JSONDecoder()
    position = 0
    while position < len(body):
        try:
            value, end = decoder.raw_decode(body, position)
        except ValueError:
            return []
        call = call_of(value, arguments_required=True)
        if call is None:
            return []
        calls.append(call)
        position = end
        while position < len(body) and body[position] in " \t\n;":
            position += 1
    return calls
