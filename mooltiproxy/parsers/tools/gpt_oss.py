"""gpt-oss: a harmony `commentary` message to `functions.NAME` is a call, its body the arguments. The
reasoning parser (parsers/reasoning/harmony.py) writes each into the content as
`to=functions.NAME<|message|>ARGS<|call|>`, which this reads."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mooltiproxy.parsers.reasoning.harmony import GptOssParser as HarmonyReasoning
from mooltiproxy.parsers.tools.base import NOT_JSON, Calls, MarkedParser, call_of, json_value


class GptOssParser(MarkedParser):
    name = "gpt_oss"
    special_tokens = HarmonyReasoning.special_tokens
    opening = "to=functions."
    closing = re.compile(r"(?P<end><\|call\|>)")

    def detect(self, template_source: str) -> bool:
        return HarmonyReasoning().detect(template_source)

    def calls_in(self, source: str, tools: Sequence[Any]) -> Calls | None:
        name, separator, arguments = source.partition("<|message|>")
        value = json_value(arguments)
        if not separator or not name.strip() or value is NOT_JSON:
            return None
        call = call_of({"name": name.strip(), "arguments": value})
        return [call] if call is not None else None
