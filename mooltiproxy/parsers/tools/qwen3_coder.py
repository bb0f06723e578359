"""Qwen3-Coder: `<tool_call>` markers around XML, `<function=name>` with a
`<parameter=key>value</parameter>` per argument, each value typed by the tool's schema."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any

from mooltiproxy.parsers.tools.base import NOT_JSON, Calls, MarkedParser, call_of, json_value

_XML_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>(.*)", re.S)
_XML_PARAMETER_START = re.compile(r"<parameter=([^>\n]+)>")


class Qwen3CoderParser(MarkedParser):
    name = "qwen3_coder"
    special_tokens = frozenset({"<tool_call>", "</tool_call>"})
    opening = "<tool_call>"
    # `</tool_call>` counts only after `</function>`, so that a value holding "</tool_call>" (an
    # agent writing a file about tool calls) does not end the call. A call the answer ends before
    # its closing marker (the model stopped there) is still read.
    closing = re.compile(r"</function>\s*(?P<end></tool_call>)")

    def detect(self, template_source: str) -> bool:
        return self.opening in template_source and "<function=" in template_source

    def calls_in(self, source: str, tools: Sequence[Any]) -> Calls | None:
        """`<function=name><parameter=key>value</parameter>...</function>`, each value made the type
        the tool's schema gives its parameter (a string when the schema says string or nothing). A
        function none of the request's tools is (a template's `{{ name }}` leaking) is no call."""
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
        call = call_of({"name": name, "arguments": _xml_arguments(body, properties)})
        return [call] if call is not None else None


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
    if parsed is NOT_JSON or not isinstance(parsed, allowed) or (isinstance(parsed, bool) and bool not in allowed):
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
    """JSON, else a Python literal, else NOT_JSON."""
    parsed = json_value(text)
    if parsed is not NOT_JSON:
        return parsed
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return NOT_JSON
