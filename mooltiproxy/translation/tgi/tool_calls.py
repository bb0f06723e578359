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

import ast
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
# Where a call that a marker opened ends (the group `end` is the closing marker): Qwen3-Coder's
# `</tool_call>` counts only after its `</function>`, so that a value holding "</tool_call>" (an
# agent writing a file about tool calls) does not end the call. A call the answer ends before its
# closing marker (the model stopped there) is still read.
CLOSINGS = {
    "hermes": re.compile(r"(?P<end></tool_call>)"),
    "qwen3_coder": re.compile(r"</function>\s*(?P<end></tool_call>)"),
}
_XML_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>(.*)", re.S)
_XML_PARAMETER_START = re.compile(r"<parameter=([^>\n]+)>")


def parse_tool_calls(text: str, parser: str, tools: Sequence[Any] = ()) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, OpenAI tool_calls) of a generated text; `tools` (the request's) type XML arguments."""
    if parser == "llama3_json":
        whole = _json_calls(text)
        return (None, whole) if whole else (text, [])
    if parser == "grammar":
        return _grammar_answer(text)
    if parser == "mistral":
        return _mistral_answer(text)
    opening, closing = MARKERS[parser][0], CLOSINGS[parser]
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    position = search = 0
    while (start := text.find(opening, search)) >= 0:
        body = start + len(opening)
        close = closing.search(text, body)
        found = marked_calls(text[body : close.start("end")] if close else text[body:], parser, tools)
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
        call = _call_of(value, arguments_required=True)
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
    tool's schema gives its parameter (a string when the schema says string or nothing). A function
    none of the request's tools is (a template's `{{ name }}` leaking) is no call."""
    function = _XML_FUNCTION.match(source)
    if function is None:
        return None
    name = function.group(1).strip()
    properties = _parameters_of(name, tools)
    if properties is None:
        return None
    body = function.group(2)
    end = body.rfind("</function>")
    if end >= 0 and not body[end + len("</function>") :].strip():
        body = body[:end]
    return _call_of({"name": name, "arguments": _xml_arguments(body, properties)})


def _xml_arguments(body: str, properties: dict[str, Any]) -> dict[str, Any]:
    """Each value runs to the next parameter's start, less its closing `</parameter>`: a value may
    hold `</parameter>` itself, and `<parameter=...>` too when the name is not the tool's or was seen
    already (an agent writing a file about tool calls)."""
    starts: list[re.Match[str]] = []
    seen: set[str] = set()
    for start in _XML_PARAMETER_START.finditer(body):
        key = start.group(1).strip()
        if key not in seen and (not properties or key in properties):
            seen.add(key)
            starts.append(start)
    arguments = {}
    for index, start in enumerate(starts):
        stop = starts[index + 1].start() if index + 1 < len(starts) else len(body)
        value = body[start.end() : stop].rstrip()
        value = value.removesuffix("</parameter>").removeprefix("\n").removesuffix("\n")
        key = start.group(1).strip()
        arguments[key] = _typed(value, properties.get(key))
    return arguments


def _parameters_of(name: str, tools: Sequence[Any]) -> dict[str, Any] | None:
    """The tool's declared parameters; None when the request has tools and none is called `name`."""
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name") == name:
            parameters = function.get("parameters")
            properties = parameters.get("properties") if isinstance(parameters, dict) else None
            return properties if isinstance(properties, dict) else {}
    return None if tools else {}


# What a value of each JSON Schema type may be once read ("float" is a type some tools declare).
_KINDS: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "float": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _typed(value: str, schema: Any) -> Any:
    """An XML parameter's text as its schema says (`type`, a list of types, or Pydantic's
    `anyOf`/`oneOf` for Optional fields): JSON, or a Python literal (`True`, `None`, `{'k': 'v'}`)
    as models write them; `null`/`None` where the schema allows null; text that is not of the type
    stays text."""
    kinds = _types_of(schema)
    written = value.strip()
    if "null" in kinds and written in ("null", "None"):
        return None
    first = next((kind for kind in kinds if kind != "null"), "string")
    if first not in _KINDS:
        return value
    parsed = _literal(written)
    if isinstance(parsed, tuple):
        parsed = list(parsed)
    allowed = _KINDS[first]
    if parsed is _NOT_JSON or not isinstance(parsed, allowed) or (isinstance(parsed, bool) and bool not in allowed):
        return value
    return parsed


def _types_of(schema: Any) -> list[str]:
    if not isinstance(schema, dict):
        return []
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [item for item in kind if isinstance(item, str)]
    members = schema.get("anyOf") or schema.get("oneOf")
    return [kind for member in members for kind in _types_of(member)] if isinstance(members, list) else []


def _literal(text: str) -> Any:
    """JSON, else a Python literal, else _NOT_JSON."""
    parsed = _json_value(text)
    if parsed is not _NOT_JSON:
        return parsed
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_JSON


def _call(source: str) -> dict[str, Any] | None:
    try:
        value = json.loads(source)
    except ValueError:
        return None
    return _call_of(value)


def _call_of(value: Any, *, arguments_required: bool = False) -> dict[str, Any] | None:
    """An OpenAI tool call from a parsed {"name", "arguments" (or "parameters")}, or None. The
    arguments must be an object, or a string that is one (Granite and some Hermes models encode
    them): anything else (`"hello"`, `"[oops"`, a number) is no call, since no client could read it."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    if arguments_required and "arguments" not in value and "parameters" not in value:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        decoded = _json_value(arguments)
        if not isinstance(decoded, dict):
            return None
        encoded = arguments.strip()
    elif isinstance(arguments, dict):
        encoded = json.dumps(arguments, ensure_ascii=False)
    else:
        return None
    return {"id": new_id("call_"), "type": "function", "function": {"name": value["name"], "arguments": encoded}}
