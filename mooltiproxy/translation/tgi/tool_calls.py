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
  grammar built from the tools (grammar.py), one of which it must call, or (unless `tool_choice`
  forbids it) the `no_tool` choice that carries a text answer. Streamed, the answer is held until
  it ends.

The text around calls stays the answer's content; a malformed call stays text too, never an error.
Streams are read by tool_stream.py, the same way; what the model is told is in tool_prompts.py.

TGI leaves every special token out of generated_text, and Mistral's markers (`<tool_call>` too, in
some Hermes models) are special tokens: with these parsers the answer is read from its tokens,
where a special token's text is kept when it is one of the parser's markers (SPECIAL_MARKERS).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from mooltiproxy.core.ids import new_id
from mooltiproxy.translation.tgi.grammar import read_tool_answer

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
        found = marked_calls(match.group(1), parser, tools)
        if found is None:
            continue  # malformed: left in the text
        kept.append(text[position : match.start()])
        position = match.end()
        calls += found
    kept.append(text[position:])
    content = "".join(kept).strip()
    return (content or None) if calls else text, calls


def _grammar_answer(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    answer = read_tool_answer(text)
    if answer is None:
        return text, []
    if isinstance(answer, str):
        return answer, []
    call = _call_of({"name": answer[0], "arguments": answer[1]})
    return None, [call] if call is not None else []


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
    value = _json_value(arguments)
    call = _call_of({"name": name, "arguments": value}) if name and value is not _NOT_JSON else None
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


def marked_calls(source: str, parser: str, tools: Sequence[Any]) -> list[dict[str, Any]] | None:
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
    encoded = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": new_id("call_"), "type": "function", "function": {"name": value["name"], "arguments": encoded}}
