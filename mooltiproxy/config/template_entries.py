"""`templates:` entries: role markers of the original format, or a whole Jinja template.

A Jinja template is given inline (`jinja:` or `chat_template:`) or read from a Hugging Face
`tokenizer_config.json` (`tokenizer_config:`), which also gives the bos / eos tokens. Entries are
validated and compiled at load time; the built-in chat templates are usable by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import voluptuous as vol

from mooltiproxy.config.templates import PromptTemplate, compile_template, stop_strings_of

SOURCES = ("jinja", "chat_template", "tokenizer_config")
_SETTINGS = ("bos_token", "eos_token", "stop")
MARKERS = ("preprompt", "start", "system", "user", "assistant")
BUILTIN_FILE = Path(__file__).with_name("chat_templates.json")


def kind_of(entry: Any) -> str:
    """'jinja' or 'markers', from a raw entry (for checks that run before it is validated)."""
    return "jinja" if isinstance(entry, Mapping) and any(key in entry for key in SOURCES) else "markers"


def template_entry_validator(folder: Path) -> Callable[[Any], dict[str, Any]]:
    """A voluptuous validator turning a raw entry into PromptTemplate keyword arguments."""

    def validate(entry: Any) -> dict[str, Any]:
        if not isinstance(entry, Mapping):
            raise vol.Invalid("expected a mapping of role markers, or a Jinja template")
        sources = [key for key in SOURCES if key in entry]
        if len(sources) > 1:
            raise vol.Invalid(f"give only one of {', '.join(SOURCES)}")
        stop = entry.get("stop", [])
        if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
            raise vol.Invalid("expected a list of strings", path=["stop"])
        tokens = {name: _text(entry, name) for name in ("bos_token", "eos_token") if name in entry}
        if sources:
            return _jinja_entry(entry, sources[0], folder, tokens, stop)
        errors = []
        markers = {}
        for name, value in entry.items():
            if name in _SETTINGS:
                continue
            if value is not None and not isinstance(value, str):
                errors.append(vol.Invalid("expected a string", path=[name]))
            markers[name] = value or ""
        if errors:
            raise vol.MultipleInvalid(errors)
        for name in MARKERS:
            markers.setdefault(name, "")
        return {"markers": markers, "stop": tuple(stop), **tokens}

    return validate


def _jinja_entry(entry: Mapping, source: str, folder: Path, tokens: dict, stop: list[str]) -> dict[str, Any]:
    markers = [key for key in entry if key not in SOURCES and key not in _SETTINGS]
    if markers:
        raise vol.Invalid(f"role markers ({', '.join(map(str, markers))}) cannot be mixed with a Jinja template")
    if source == "tokenizer_config":
        text, file_tokens = _read_tokenizer_config(entry[source], folder)
        tokens = {**file_tokens, **tokens}
    else:
        text = entry[source]
        if not isinstance(text, str):
            raise vol.Invalid("expected a Jinja template string", path=[source])
    try:
        compiled = compile_template(text)
    except jinja2.TemplateSyntaxError as exc:
        raise vol.Invalid(f"Jinja syntax error on line {exc.lineno}: {exc.message}", path=[source]) from None
    return {
        "jinja": compiled,
        "stop": stop_strings_of(tokens.get("eos_token", ""), text, stop),
        **tokens,
    }


def _text(entry: Mapping, name: str) -> str:
    value = entry[name]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise vol.Invalid("expected a string", path=[name])
    return value


def _read_tokenizer_config(path_value: Any, folder: Path) -> tuple[str, dict[str, str]]:
    if not isinstance(path_value, str):
        raise vol.Invalid("expected the path of a tokenizer_config.json", path=["tokenizer_config"])
    path = folder / path_value
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise vol.Invalid(f"cannot read '{path}': {exc.strerror or exc}", path=["tokenizer_config"]) from None
    except ValueError as exc:
        raise vol.Invalid(f"'{path}' is not valid JSON: {exc}", path=["tokenizer_config"]) from None
    if not isinstance(document, dict):
        raise vol.Invalid(f"'{path}' is not a tokenizer config", path=["tokenizer_config"])
    template = document.get("chat_template")
    if isinstance(template, list):
        # Several named templates: the conversation one is called "default".
        named = {item.get("name"): item.get("template") for item in template if isinstance(item, dict)}
        if "default" not in named:
            raise vol.Invalid(
                f"'{path}' has no 'default' chat template (has: {', '.join(map(str, named))})",
                path=["tokenizer_config"],
            )
        template = named["default"]
    if not isinstance(template, str):
        raise vol.Invalid(f"'{path}' has no chat_template", path=["tokenizer_config"])
    tokens = {}
    for name in ("bos_token", "eos_token"):
        value = document.get(name)
        if isinstance(value, dict):  # {"content": "<s>", "lstrip": false, ...}
            value = value.get("content")
        if isinstance(value, str):
            tokens[name] = value
    return template, tokens


@cache
def builtin_templates() -> dict[str, PromptTemplate]:
    """Ready chat templates of common models, usable by name without a `templates:` entry."""
    templates = {}
    for name, entry in json.loads(BUILTIN_FILE.read_text(encoding="utf-8")).items():
        source = entry["chat_template"]
        templates[name] = PromptTemplate(
            name=name,
            jinja=compile_template(source),
            bos_token=entry["bos_token"],
            eos_token=entry["eos_token"],
            stop=stop_strings_of(entry["eos_token"], source),
        )
    return templates
