"""`templates:` entries: role markers of the original format, or a whole Jinja template.

A Jinja template is given inline (`jinja:` or `chat_template:`) or read from a Hugging Face model
folder (`tokenizer_config:`, the folder or its `tokenizer_config.json`): its `chat_template.jinja`,
`chat_template.json` or the config's own `chat_template`, and its special tokens. Entries are
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

from mooltiproxy.config.templates import (
    PromptTemplate,
    compile_template,
    reads_content_parts,
    stop_strings_of,
)
from mooltiproxy.parsers.reasoning import detect as reasoning_format
from mooltiproxy.parsers.tools import detect

SOURCES = ("jinja", "chat_template", "tokenizer_config")
_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "additional_special_tokens")
_SETTINGS = (*_TOKENS, "stop", "content_format")
# How message content reaches a Jinja template: detected from the template, or forced.
CONTENT_FORMATS = ("auto", "string", "openai")
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
        tokens = {name: _token(entry[name], name) for name in _TOKENS if name in entry}
        if sources:
            return _jinja_entry(entry, sources[0], folder, tokens, stop)
        if "content_format" in entry:
            raise vol.Invalid("content_format is for Jinja templates", path=["content_format"])
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
        return {"markers": markers, "stop": tuple(stop), **_split_tokens(tokens)}

    return validate


def _jinja_entry(entry: Mapping, source: str, folder: Path, tokens: dict, stop: list[str]) -> dict[str, Any]:
    markers = [key for key in entry if key not in SOURCES and key not in _SETTINGS]
    if markers:
        raise vol.Invalid(f"role markers ({', '.join(map(str, markers))}) cannot be mixed with a Jinja template")
    content_format = entry.get("content_format", "auto")
    if content_format not in CONTENT_FORMATS:
        raise vol.Invalid(f"expected one of {', '.join(CONTENT_FORMATS)}", path=["content_format"])
    if source == "tokenizer_config":
        named, file_tokens = _read_model_folder(entry[source], folder)
        tokens = {**file_tokens, **tokens}
    else:
        named = _named_templates(entry[source], f"'{source}'")
    default = named["default"]
    compiled = {name: _compiled(text, source) for name, text in named.items() if name in ("default", "tool_use")}
    parts = content_format == "openai" or (content_format == "auto" and reads_content_parts(default))
    return {
        "jinja": compiled["default"],
        "tool_use": compiled.get("tool_use"),
        "content_parts": parts,
        "renders_tools": "tools" in default or "tool_use" in compiled,
        "tool_call_format": detect(named.get("tool_use", default)),
        "reasoning_format": reasoning_format(default),
        "stop": stop_strings_of(tokens.get("eos_token", ""), default, stop),
        **_split_tokens(tokens),
    }


def _compiled(text: str, source: str) -> jinja2.Template:
    try:
        return compile_template(text)
    except jinja2.TemplateSyntaxError as exc:
        raise vol.Invalid(f"Jinja syntax error on line {exc.lineno}: {exc.message}", path=[source]) from None


def _named_templates(value: Any, where: str) -> dict[str, str]:
    """A chat template, or a model's named ones (a list of {name, template}, or a mapping): the
    conversation one is `default`; `tool_use`, when there is one, serves requests with tools."""
    if isinstance(value, str):
        return {"default": value}
    if isinstance(value, list):
        value = {item.get("name"): item.get("template") for item in value if isinstance(item, Mapping)}
    if not isinstance(value, Mapping) or not all(isinstance(text, str) for text in value.values()):
        raise vol.Invalid(f"{where}: expected a Jinja template, or named templates")
    if "default" not in value:
        raise vol.Invalid(f"{where} has no 'default' chat template (has: {', '.join(map(str, value))})")
    return dict(value)


def _split_tokens(tokens: Mapping[str, Any]) -> dict[str, Any]:
    """PromptTemplate's keyword arguments for the special tokens."""
    others = {name: value for name, value in tokens.items() if name not in ("bos_token", "eos_token")}
    return {
        **{name: tokens[name] for name in ("bos_token", "eos_token") if name in tokens},
        "other_tokens": others,
    }


def _token(value: Any, name: str) -> Any:
    """A special token as transformers gives it to templates: its text (a list of texts for
    additional_special_tokens); tokenizer configs write a token as a string or as {"content": ...}."""
    if name == "additional_special_tokens":
        if not isinstance(value, list):
            raise vol.Invalid("expected a list of tokens", path=[name])
        return [_token(item, "token") for item in value]
    if isinstance(value, Mapping):
        value = value.get("content")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise vol.Invalid("expected a string", path=[name])
    return value


def _read_model_folder(path_value: Any, folder: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The chat templates and special tokens of a model folder, found as transformers finds them:
    chat_template.jinja, else chat_template.json, else tokenizer_config.json's chat_template."""
    if not isinstance(path_value, str):
        raise vol.Invalid("expected a model folder or the path of its tokenizer_config.json", path=["tokenizer_config"])
    path = folder / path_value
    config_path = path / "tokenizer_config.json" if path.is_dir() else path
    model = config_path.parent
    config = _read_json(config_path) if config_path.exists() or not path.is_dir() else {}
    tokens = {name: _token(config[name], name) for name in _TOKENS if config.get(name) is not None}
    jinja_file, json_file = model / "chat_template.jinja", model / "chat_template.json"
    if jinja_file.exists():
        return {"default": _read_text(jinja_file)}, tokens
    if json_file.exists():
        template = _read_json(json_file).get("chat_template")
        return _named_templates(template, f"'{json_file}'"), tokens
    if "chat_template" not in config:
        raise vol.Invalid(f"no chat template in '{model}'", path=["tokenizer_config"])
    return _named_templates(config["chat_template"], f"'{config_path}'"), tokens


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise vol.Invalid(f"cannot read '{path}': {exc.strerror or exc}", path=["tokenizer_config"]) from None
    except UnicodeDecodeError:
        raise vol.Invalid(f"'{path}' is not UTF-8 text", path=["tokenizer_config"]) from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(_read_text(path))
    except ValueError as exc:
        raise vol.Invalid(f"'{path}' is not valid JSON: {exc}", path=["tokenizer_config"]) from None
    if not isinstance(document, dict):
        raise vol.Invalid(f"'{path}' is not a JSON object", path=["tokenizer_config"])
    return document


@cache
def builtin_templates() -> dict[str, PromptTemplate]:
    """Ready chat templates of common models, usable by name without a `templates:` entry."""
    templates = {}
    for name, entry in json.loads(BUILTIN_FILE.read_text(encoding="utf-8")).items():
        source = entry["chat_template"]
        templates[name] = PromptTemplate(
            name=name,
            jinja=compile_template(source),
            content_parts=reads_content_parts(source),
            bos_token=entry["bos_token"],
            eos_token=entry["eos_token"],
            stop=stop_strings_of(entry["eos_token"], source),
        )
    return templates
