"""TGI's JSON grammars, in the shapes TGI's router accepts.

TGI refuses a JSON grammar whose schema has no top-level `properties` (router/src/validation.rs:
`Grammar must have a 'properties' field`), so a tool grammar is built the way TGI's own Messages
API builds it (router/src/infer/tool_grammar.rs): each tool a schema under `$functions`, its
arguments beside a `_name` constant, and the answer one object `{"function": {"_name": ..., ...}}`
chosen by `properties.function.anyOf`. The `no_tool` choice carries the text answer in `content`
(TGI generates a second time for it; here one generation is enough).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mooltiproxy.backends.tgi.request import invalid
from mooltiproxy.parsers.tools.grammar import NO_TOOL

_NO_TOOL_SCHEMA = {
    "description": "Open ended response with no specific tool selected",
    "properties": {"_name": {"type": "string", "const": NO_TOOL}, "content": {"type": "string"}},
    "required": ["_name", "content"],
    "additionalProperties": False,
}


def tool_grammar(tools: list[Any], tool_choice: Any) -> dict[str, Any]:
    """TGI's grammar for a call of one of the tools, or the no_tool answer when the choice allows it."""
    named = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    chosen = named.get("name") if isinstance(named, dict) else None
    functions: dict[str, Any] = {}
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            continue
        name = function.get("name")
        if isinstance(name, str) and name != NO_TOOL and (chosen is None or name == chosen):
            functions[name] = _function_schema(name, function)
    if chosen is None and tool_choice != "required":
        functions[NO_TOOL] = _NO_TOOL_SCHEMA
    if not functions:
        raise invalid(f"'tool_choice' names {chosen!r}, which is none of the request's tools", "tool_choice")
    choices = [{"$ref": f"#/$functions/{_pointer(name)}"} for name in functions]
    value = {
        "$functions": functions,
        "type": "object",
        "properties": {"function": {"anyOf": choices}},
        "required": ["function"],
    }
    return {"type": "json", "value": value}


def _function_schema(name: str, function: Mapping[str, Any]) -> dict[str, Any]:
    """One tool's arguments beside its `_name`, as TGI flattens them; references inside the tool's
    schema (`#/$defs/...`, as Pydantic writes them) now point where the schema went."""
    parameters = function.get("parameters")
    parameters = _rebased(parameters, f"#/$functions/{_pointer(name)}/") if isinstance(parameters, dict) else {}
    properties = parameters.get("properties")
    required = parameters.get("required")
    schema: dict[str, Any] = {
        key: value for key, value in parameters.items() if key in ("$defs", "definitions") and isinstance(value, dict)
    }
    schema["description"] = str(function.get("description") or "")
    declared = properties if isinstance(properties, dict) else {}
    schema["properties"] = {"_name": {"type": "string", "const": name}, **declared}
    schema["required"] = (
        ["_name", *(key for key in required if isinstance(key, str))] if isinstance(required, list) else ["_name"]
    )
    # Closed, as TGI closes it: outlines-core, which compiles TGI's grammars, generates only the
    # declared properties anyway.
    schema["additionalProperties"] = parameters.get("additionalProperties") is True
    return schema


def _rebased(schema: Any, base: str) -> Any:
    """The schema with its local references (`#/...`) made relative to `base`."""
    if isinstance(schema, dict):
        return {
            key: base + value[2:] if _is_local_reference(key, value) else _rebased(value, base)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_rebased(item, base) for item in schema]
    return schema


def _is_local_reference(key: str, value: Any) -> bool:
    return key == "$ref" and isinstance(value, str) and value.startswith("#/")


def _pointer(name: str) -> str:
    """A name as one step of a JSON pointer (RFC 6901)."""
    return name.replace("~", "~0").replace("/", "~1")
