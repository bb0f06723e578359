"""Tool calls read back from the text a model generated on TGI's /generate.

- `hermes` (Hermes, Qwen 2.5 and Qwen 3): each call a JSON object `{"name": ..., "arguments": {...}}`
  between `<tool_call>` and `</tool_call>`, anywhere in the text. In a stream, only the text that
  may be the start of the marker is held back.
- `qwen3_coder` (Qwen3-Coder): the same markers around XML, `<function=name>` with a
  `<parameter=key>value</parameter>` per argument, each value typed by the tool's schema.
- `llama3_json` (Llama 3.1, 3.2, 3.3): the whole answer is the call(s), `{"name": ..., "parameters":
  {...}}`, several separated by `;`. In a stream, an answer that begins with `{` is held until it
  ends, then read as calls or released as text.
- `mistral` (Mistral 7B v0.3, Nemo, Small 3.x, Devstral): the calls follow `[TOOL_CALLS]`, as a JSON
  list `[{"name": ..., "arguments": {...}}]` in older models, as `name[ARGS]{...}` after each
  `[TOOL_CALLS]` in newer ones (with `[CALL_ID]id` in some). The text before is content. A call
  runs to the next marker or to the end of the answer: in a stream, each is sent once the next
  begins.

- `grammar` (any model, as TGI's own Messages API does it): the generation is constrained by a JSON
  grammar built from the tools, one of which it must call, or (unless `tool_choice` forbids it) the
  `no_tool` choice that carries a text answer. Streamed, the answer is held until it ends.

The text around calls stays the answer's content; a call that is not valid JSON stays text too,
never an error.

TGI leaves every special token out of generated_text, and Mistral's markers (`<tool_call>` too, in
some Hermes models) are special tokens: with these parsers the answer is read from its tokens,
where a special token's text is kept when it is one of the parser's markers (SPECIAL_MARKERS).
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Sequence
from typing import Any

from mooltiproxy.core.ids import new_id
from mooltiproxy.translation.prompting import message_content, parsed_arguments

# Each parser's markers around a call: (opening, closing); without a closing one the calls run to
# the end of the answer.
MARKERS: dict[str, tuple[str, str | None]] = {
    "hermes": ("<tool_call>", "</tool_call>"),
    "qwen3_coder": ("<tool_call>", "</tool_call>"),
    "mistral": ("[TOOL_CALLS]", None),
}
SPECIAL_MARKERS = {
    "hermes": frozenset({"<tool_call>", "</tool_call>"}),
    "qwen3_coder": frozenset({"<tool_call>", "</tool_call>"}),
    "mistral": frozenset({"[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"}),
}
_MARKED_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_XML_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>(.*?)(?:</function>)?\s*", re.S)
_XML_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)(?:</parameter>|(?=<parameter=)|\Z)", re.S)


def parse_tool_calls(text: str, parser: str, tools: Sequence[Any] = ()) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, OpenAI tool_calls) of a generated text; `tools` (the request's) type XML arguments."""
    if parser == "llama3_json":
        whole = _json_calls(text)
        return (None, whole) if whole else (text, [])
    if parser == "grammar":
        return _grammar_answer(text)
    if parser == "mistral":
        return _mistral_answer(text)
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    position = 0
    for match in _MARKED_CALL.finditer(text):
        found = _marked_calls(match.group(1), parser, tools)
        if found is None:
            continue  # malformed: left in the text
        kept.append(text[position : match.start()])
        position = match.end()
        calls += found
    kept.append(text[position:])
    content = "".join(kept).strip()
    return (content or None) if calls else text, calls


NO_TOOL = "no_tool"


def grammar_for(tools: list[Any], tool_choice: Any) -> dict[str, Any]:
    """TGI's grammar for a call of one of the tools, or the no_tool answer when the choice allows it."""
    chosen = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
    options: list[dict[str, Any]] = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or (chosen is not None and function.get("name") != chosen):
            continue
        properties = {
            "name": {"const": function.get("name")},
            "arguments": function.get("parameters") or {"type": "object"},
        }
        options.append({"type": "object", "properties": properties, "required": ["name", "arguments"]})
    if chosen is None and tool_choice != "required":
        properties = {"name": {"const": NO_TOOL}, "content": {"type": "string"}}
        options.append({"type": "object", "properties": properties, "required": ["name", "content"]})
    return {"type": "json", "value": {"oneOf": options}}


def without_tool_turns(messages: Any, tools: list[Any] | None) -> Any:
    """The conversation for a template that renders no tools (grammar mode): earlier calls written as
    the JSON the grammar had the model write, their results as a user turn (consecutive ones in one),
    and the tools, when the request has some, described after the last message, as TGI's Messages
    API does."""
    if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
        return messages  # the prompter says what is wrong
    names: dict[str, str] = {}  # call id -> tool name
    turns: list[dict[str, Any]] = []
    results: list[str] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            call_id, name = message.get("tool_call_id"), message.get("name")
            if not isinstance(name, str) or not name:
                name = names.get(call_id, "the tool") if isinstance(call_id, str) else "the tool"
            results.append(f"{name} returned: {message_content(message, index)}")
            continue
        if results:
            turns.append({"role": "user", "content": "\n\n".join(results)})
            results = []
        calls = message.get("tool_calls")
        if role == "assistant" and isinstance(calls, list) and calls:
            written = [message_content(message, index)]
            for call in calls:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    if isinstance(call.get("id"), str) and isinstance(function.get("name"), str):
                        names[call["id"]] = function["name"]
                    call_json = {"name": function.get("name"), "arguments": parsed_arguments(function.get("arguments"))}
                    written.append(json.dumps(call_json, ensure_ascii=False))
            message = {"role": "assistant", "content": "\n".join(text for text in written if text)}
        turns.append(message)
    if results:
        turns.append({"role": "user", "content": "\n\n".join(results)})
    if tools and turns:
        last = turns[-1]
        turns[-1] = {**last, "content": message_content(last, len(turns) - 1) + tool_prompt(tools)}
    return turns


def tool_prompt(tools: list[Any]) -> str:
    """What a model whose template renders no tools is told of them, as TGI's Messages API does."""
    return (
        "\n\nYou will be presented with a JSON schema representing a set of tools. Answer with a JSON "
        f'object: {{"name": the tool to call, "arguments": its arguments}}, or {{"name": "{NO_TOOL}", '
        '"content": your answer} when no tool is needed.\n\nJSON Schema:\n' + json.dumps(tools)
    )


def _grammar_answer(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    try:
        value = json.loads(text)
    except ValueError:
        return text, []
    if isinstance(value, dict) and value.get("name") == NO_TOOL:
        return str(value.get("content", "")), []
    call = _call(text)
    return (None, [call]) if call is not None else (text, [])


def _mistral_answer(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    content, *segments = text.split("[TOOL_CALLS]")
    kept, calls = [content], []
    for segment in segments:
        found = _mistral_calls(segment)
        if found is None:
            kept.append("[TOOL_CALLS]" + segment)  # malformed: it stays text
        else:
            calls += found
    return ("".join(kept).strip() or None, calls) if calls else (text, [])


def _mistral_calls(segment: str) -> list[dict[str, Any]] | None:
    """The call(s) of what follows one `[TOOL_CALLS]`, or None when it is malformed."""
    body = segment.strip()
    if body.startswith(("[", "{")):  # older models: a JSON list of calls
        value = _json_value(body, whole=False)
        found = [_call_of(item) for item in (value if isinstance(value, list) else [value])]
        calls = [call for call in found if call is not None]
        return calls if calls and len(calls) == len(found) else None
    name, separator, arguments = segment.partition("[ARGS]")  # newer ones: name[ARGS]{...}
    if not separator:  # without the [ARGS] token's text, the arguments start at the first brace
        brace = segment.find("{")
        name, arguments = (segment[:brace], segment[brace:]) if brace > 0 else (segment, "")
    name = name.partition("[CALL_ID]")[0].strip()
    call = _call_of({"name": name, "arguments": _json_value(arguments)}) if name else None
    return [call] if call is not None else None


_NOT_JSON = object()


def _json_value(text: str, whole: bool = True) -> Any:
    """The JSON value the text begins with (and, if `whole`, is), else _NOT_JSON."""
    text = text.strip()
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return _NOT_JSON
    return value if end == len(text) or not whole else _NOT_JSON


_ALPHANUMERIC = string.ascii_letters + string.digits


def mistral_id(client_id: str) -> str:
    """A 9-character id for a client's tool-call id, the only kind Mistral's templates take; the same
    id gives the same one, so a call and its result still match."""
    if len(client_id) == 9 and client_id.isascii() and client_id.isalnum():
        return client_id
    number = int.from_bytes(hashlib.sha256(client_id.encode()).digest()[:8])
    return "".join(_ALPHANUMERIC[number // 62**place % 62] for place in range(9))


def with_mistral_ids(messages: Any) -> Any:
    """The messages with every tool-call id (of calls and of results) made one Mistral takes."""
    if not isinstance(messages, list):
        return messages
    mapped = []
    for message in messages:
        if isinstance(message, dict):
            message = dict(message)
            if isinstance(message.get("tool_call_id"), str):
                message["tool_call_id"] = mistral_id(message["tool_call_id"])
            if isinstance(message.get("tool_calls"), list):
                message["tool_calls"] = [
                    {**call, "id": mistral_id(call["id"])}
                    if isinstance(call, dict) and isinstance(call.get("id"), str)
                    else call
                    for call in message["tool_calls"]
                ]
        mapped.append(message)
    return mapped


def _json_calls(text: str) -> list[dict[str, Any]]:
    """The calls of an answer that is nothing but calls, or none at all."""
    body = text.strip().removeprefix("<|python_tag|>").strip()
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
        call = _call_of(value)
        if call is None:
            return []
        calls.append(call)
        position = end
        while position < len(body) and body[position] in " \t\n;":
            position += 1
    return calls


def _marked_calls(source: str, parser: str, tools: Sequence[Any]) -> list[dict[str, Any]] | None:
    """The call(s) a parser's marker opens, or None when they are malformed."""
    if parser == "mistral":
        return _mistral_calls(source)
    call = _xml_call(source, tools) if parser == "qwen3_coder" else _call(source.strip())
    return [call] if call is not None else None


def _xml_call(source: str, tools: Sequence[Any]) -> dict[str, Any] | None:
    """`<function=name><parameter=key>value</parameter>...</function>`, each value made the type the
    tool's schema gives its parameter (a string when the schema says string or nothing)."""
    function = _XML_FUNCTION.fullmatch(source)
    if function is None:
        return None
    name = function.group(1).strip()
    properties = _parameters_of(name, tools)
    arguments = {}
    for parameter in _XML_PARAMETER.finditer(function.group(2)):
        key = parameter.group(1).strip()
        value = parameter.group(2).removeprefix("\n").removesuffix("\n")
        arguments[key] = _typed(value, properties.get(key))
    return _call_of({"name": name, "arguments": arguments})


def _parameters_of(name: str, tools: Sequence[Any]) -> dict[str, Any]:
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name") == name:
            parameters = function.get("parameters")
            properties = parameters.get("properties") if isinstance(parameters, dict) else None
            return properties if isinstance(properties, dict) else {}
    return {}


def _typed(value: str, schema: Any) -> Any:
    """An XML parameter's text as its schema's type says; text that is not of that type stays text."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind in (None, "string") or (isinstance(kind, list) and "string" in kind):
        return value
    parsed = _json_value(value)
    return value if parsed is _NOT_JSON else parsed


def _call(source: str) -> dict[str, Any] | None:
    try:
        value = json.loads(source)
    except ValueError:
        return None
    return _call_of(value)


def _call_of(value: Any) -> dict[str, Any] | None:
    """An OpenAI tool call from a parsed {"name", "arguments" (or "parameters")}, or None."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if arguments is _NOT_JSON:
        return None
    encoded = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": new_id("call_"), "type": "function", "function": {"name": value["name"], "arguments": encoded}}


def tool_call_filter(parser: str, tools: Sequence[Any] = ()) -> ToolCallFilter | WholeAnswerFilter:
    if parser in MARKERS:
        return ToolCallFilter(parser, tools)
    return WholeAnswerFilter(parser, hold_all=parser == "grammar")


class WholeAnswerFilter:
    """For parsers whose calls are the whole answer: an answer that may be calls (one that begins
    with `{`, or any answer under a grammar) is held to its end; any other is released as it comes."""

    def __init__(self, parser: str, hold_all: bool = False):
        self._parser = parser
        self._held: str | None = "" if hold_all else None  # the answer so far, while it may be calls
        self._deciding = ""

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        if self._held is not None:
            self._held += text
            return "", []
        self._deciding += text
        start = self._deciding.lstrip().removeprefix("<|python_tag|>").lstrip()
        if not start:
            return "", []
        released, self._deciding = self._deciding, ""
        if start.startswith("{"):
            self._held = released
            return "", []
        self._held = None
        return released, []

    def flush(self) -> tuple[str, list[dict[str, Any]]]:
        """What is left, and the calls it turned out to be."""
        held, self._held, self._deciding = (self._held or "") + self._deciding, None, ""
        content, calls = parse_tool_calls(held, self._parser)
        return content or "", calls


class ToolCallFilter:
    """Streamed text in, (text, completed calls) out: text is released as it comes, except what may
    be the start of a call marker; a call is released once its closing marker has come (for a
    parser without one, once the next call's opening marker, or the end of the answer, has)."""

    def __init__(self, parser: str, tools: Sequence[Any]):
        self._parser = parser
        self._tools = tools
        self._open, self._close = MARKERS[parser]
        self._buffer = ""
        self._inside = False
        self._after_call = False  # whitespace after a call is held: it is text only if more follows

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        self._buffer += text
        released = ""
        calls: list[dict[str, Any]] = []
        while True:
            if not self._inside:
                start = self._buffer.find(self._open)
                if start < 0:
                    held = _held_back(self._buffer, self._open)
                    released += self._buffer[: len(self._buffer) - held]
                    self._buffer = self._buffer[len(self._buffer) - held :]
                    break
                released += self._buffer[:start]
                self._buffer, self._inside = self._buffer[start + len(self._open) :], True
            end = self._buffer.find(self._close or self._open)
            if end < 0:
                break
            source = self._buffer[:end]
            self._buffer = self._buffer[end + len(self._close or self._open) :]
            self._inside = self._close is None  # the next call has begun, where calls close no other way
            text_instead, found = self._read(source)
            released, calls = released + text_instead, calls + found
        if self._after_call and released and not released.strip():
            self._buffer, released = released + self._buffer, ""
        elif released.strip():
            self._after_call = False
        return released, calls

    def _read(self, source: str) -> tuple[str, list[dict[str, Any]]]:
        """The call(s) between the markers, or, when malformed, the text it stays."""
        found = _marked_calls(source, self._parser, self._tools)
        if found is None:
            return self._open + source + (self._close or ""), []
        self._after_call = True
        return "", found

    def flush(self) -> tuple[str, list[dict[str, Any]]]:
        rest, inside, self._buffer, self._inside = self._buffer, self._inside, "", False
        if inside and self._close is None:  # the last call ends with the answer
            released, calls = self._read(rest)
            return ("" if self._after_call and not released.strip() else released), calls
        rest = self._open + rest if inside else rest
        return ("" if self._after_call and not rest.strip() else rest), []


def _held_back(buffer: str, marker: str) -> int:
    """Length of the longest end of the buffer that begins the marker."""
    for length in range(min(len(marker) - 1, len(buffer)), 0, -1):
        if buffer.endswith(marker[:length]):
            return length
    return 0
