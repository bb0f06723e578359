"""Prompt templates: Jinja rendered the way transformers and TGI render chat templates.

Templates are compiled once, at load time. Rendering happens in an immutable sandbox with
`trim_blocks`, `lstrip_blocks`, the loopcontrols extension, `raise_exception`, `strftime_now`
and transformers' non-escaping `tojson`, so any model's own `chat_template` can be used as is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mooltiproxy.core.errors import ProxyError

# End-of-turn tokens of common chat formats: a stop string whenever the template uses one.
END_OF_TURN_TOKENS = ("<|eot_id|>", "<end_of_turn>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<|EOT|>")


class TemplateRaised(Exception):
    """A template's own raise_exception(...): the conversation does not fit the model's format."""


def _raise_exception(message: str) -> None:
    raise TemplateRaised(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers' own filter: unlike Jinja's, it does not HTML-escape.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment


ENVIRONMENT = _environment()


def compile_template(source: str) -> jinja2.Template:
    """Raises jinja2.TemplateSyntaxError for the loader to report."""
    return ENVIRONMENT.from_string(source)


@dataclass(frozen=True)
class PromptTemplate:
    """A `templates:` entry (or a built-in one), ready to render.

    Either `markers` (the role markers of the original format) or `jinja` (a whole template,
    e.g. a model's chat_template) is set.
    """

    name: str
    markers: Mapping[str, str] = field(default_factory=dict)
    jinja: jinja2.Template | None = None
    bos_token: str = ""
    eos_token: str = ""
    stop: tuple[str, ...] = ()

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        if self.jinja is None:
            raise ProxyError(500, f"Template '{self.name}' has no Jinja template", code="template_error")
        try:
            return self.jinja.render(
                messages=messages,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=add_generation_prompt,
            )
        except TemplateRaised as exc:
            raise ProxyError(400, f"Template '{self.name}': {exc}", code="invalid_messages", param="messages") from None
        except jinja2.TemplateError as exc:
            raise ProxyError(
                400,
                f"Template '{self.name}' cannot render these messages: {exc}",
                code="invalid_messages",
                param="messages",
            ) from None


def stop_strings_of(eos_token: str, source: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The template's own stop strings, then its eos token and the end-of-turn tokens it uses."""
    stops = [*extra]
    if eos_token:
        stops.append(eos_token)
    stops.extend(token for token in END_OF_TURN_TOKENS if token in source)
    return tuple(dict.fromkeys(stop for stop in stops if stop))
