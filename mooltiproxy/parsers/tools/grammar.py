"""Any model under TGI's tool grammar (backends/tgi/grammar.py builds it, as TGI's own Messages API
does): the answer is `{"function": {"_name": tool, ...arguments}}`, or the `no_tool` choice that
carries a text answer. Streamed, every answer is held until it ends."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mooltiproxy.parsers.tools.base import Calls, WholeAnswerParser, call_of

NO_TOOL = "no_tool"  # the grammar's choice of answering with text


class GrammarParser(WholeAnswerParser):
    name = "grammar"
    holds_every_answer = True

    def parse(self, text: str, tools: Sequence[Any] = ()) -> tuple[str | None, Calls]:
        answer = read_tool_answer(text)
        if answer is None:
            return text, []
        if isinstance(answer, str):
            return answer, []
        call = call_of({"name": answer[0], "arguments": answer[1]})
        return None, [call] if call is not None else []


def read_tool_answer(text: str) -> tuple[str, dict[str, Any]] | str | None:
    """What a generation under the tool grammar says: (tool name, arguments) for a call, the text of
    a no_tool answer, or None when it is not the grammar's shape (a cut answer, say)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("_name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        return None
    assert isinstance(function, dict)
    arguments = {key: item for key, item in function.items() if key != "_name"}
    if name == NO_TOOL:
        content = arguments.get("content")
        return content if isinstance(content, str) else ""
    return name, arguments
