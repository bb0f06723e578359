"""Hermes, Qwen 2.5 and Qwen 3: each call a JSON object `{"name": ..., "arguments": {...}}` between
`<tool_call>` and `</tool_call>`, anywhere in the text (special tokens in some Hermes models)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from mooltiproxy.parsers.tools.base import Calls, MarkedParser, call_of


class HermesParser(MarkedParser):
    name = "hermes"
    special_tokens = frozenset({"<tool_call>", "</tool_call>"})
    opening = "<tool_call>"
    closing = re.compile(r"(?P<end></tool_call>)")

    def detect(self, template_source: str) -> bool:
        return self.opening in template_source

    def calls_in(self, source: str, tools: Sequence[Any]) -> Calls | None:
        try:
            value = json.loads(source.strip())
        except ValueError:
            return None
        call = call_of(value)
        return [call] if call is not None else None
