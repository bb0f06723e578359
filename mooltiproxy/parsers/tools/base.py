"""What a tool parser is: one model family's way of writing tool calls in the text it generates,
read from a whole answer and from a stream. The text around calls stays the answer's content; a
malformed call stays text too, never an error."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from mooltiproxy.core.ids import new_id
from mooltiproxy.parsers.tools.filters import Calls, MarkedCallFilter, StreamFilter, WholeAnswerFilter


class ToolParser:
    name: ClassVar[str]
    # Its markers that are special tokens: TGI leaves those out of generated_text, so the answer is
    # read from its tokens, where these keep their text.
    special_tokens: ClassVar[frozenset[str]] = frozenset()

    def detect(self, template_source: str) -> bool:
        """Whether a chat template shows its model calls in this format (what `auto` picks)."""
        return False

    def prepare_messages(self, messages: Any) -> Any:
        """The conversation as its template must see it before rendering."""
        return messages

    def parse(self, text: str, tools: Sequence[Any] = ()) -> tuple[str | None, Calls]:
        """(content, calls) of a whole answer; `tools` are the request's."""
        raise NotImplementedError

    def stream(self, tools: Sequence[Any] = ()) -> StreamFilter:
        raise NotImplementedError


class MarkedParser(ToolParser):
    """Calls that a marker opens, anywhere in the text: text is released as it comes, but for what
    may be the start of the marker, and each call once it is whole."""

    opening: ClassVar[str]
    # Where a call ends (the group `end` is the closing marker); None: at the next opening marker or
    # the end of the answer.
    closing: ClassVar[re.Pattern[str] | None] = None

    def calls_in(self, source: str, tools: Sequence[Any]) -> Calls | None:
        """The call(s) one opening marker opens, or None when they are malformed."""
        raise NotImplementedError

    def parse(self, text: str, tools: Sequence[Any] = ()) -> tuple[str | None, Calls]:
        calls: Calls = []
        kept: list[str] = []
        position = search = 0
        while (start := text.find(self.opening, search)) >= 0:
            body = start + len(self.opening)
            close = self.closing.search(text, body) if self.closing is not None else None
            found = self.calls_in(text[body : close.start("end")] if close else text[body:], tools)
            if found is not None:
                kept.append(text[position:start])
                position = close.end() if close else len(text)
                calls += found
            if close is None:
                break
            search = close.end()  # a malformed call stays in the text
        kept.append(text[position:])
        content = "".join(kept).strip()
        return (content or None) if calls else text, calls

    def stream(self, tools: Sequence[Any] = ()) -> StreamFilter:
        return MarkedCallFilter(self.opening, self.closing, lambda source: self.calls_in(source, tools))


class WholeAnswerParser(ToolParser):
    """Calls that are the whole answer: in a stream, an answer that may be calls (one that begins
    with `{` after `prefix`, or any answer when `holds_every_answer`) is held to its end; any other
    is released as it comes."""

    prefix: ClassVar[str] = ""  # a token that may come before the calls
    holds_every_answer: ClassVar[bool] = False

    def stream(self, tools: Sequence[Any] = ()) -> StreamFilter:
        return WholeAnswerFilter(lambda text: self.parse(text, tools), self.prefix, self.holds_every_answer)


NOT_JSON = object()


def json_value(text: str, whole: bool = True) -> Any:
    """The JSON value the text begins with (and, if `whole`, is), else NOT_JSON."""
    text = text.strip()
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return NOT_JSON
    return value if end == len(text) or not whole else NOT_JSON


def call_of(value: Any, *, arguments_required: bool = False) -> dict[str, Any] | None:
    """An OpenAI tool call from a parsed {"name", "arguments" (or "parameters")}, or None. The
    arguments must be an object, or a string that is one (Granite and some Hermes models encode
    them): anything else (`"hello"`, `"[oops"`, a number) is no call, since no client could read it."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    if arguments_required and "arguments" not in value and "parameters" not in value:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        decoded = json_value(arguments)
        if not isinstance(decoded, dict):
            return None
        encoded = arguments.strip()
    elif isinstance(arguments, dict):
        encoded = json.dumps(arguments, ensure_ascii=False)
    else:
        return None
    return {"id": new_id("call_"), "type": "function", "function": {"name": value["name"], "arguments": encoded}}
