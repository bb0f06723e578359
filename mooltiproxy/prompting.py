"""Prompt building: Jinja rendered the way transformers and TGI render chat templates.

Templates are compiled once, at load time. Rendering happens in an immutable sandbox with
`trim_blocks`, `lstrip_blocks`, the loopcontrols extension, `raise_exception`, `strftime_now`
and transformers' non-escaping `tojson`, so any model's own `chat_template` can be used as is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ProxyError

# Original Llama-2 default system prompt, used when a conversation has no system message.
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe. Please ensure that your responses are socially unbiased and positive in nature. "
    "If a question does not make any sense, or is not factually coherent, explain why instead of "
    "answering something not correct. If you don't know the answer to a question, please don't share "
    "false information."
)

# End-of-turn tokens of common chat formats: a stop string whenever the template uses one.
END_OF_TURN_TOKENS = ("<|eot_id|>", "<end_of_turn>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<|EOT|>")


class TemplateRaised(Exception):
    """A template's own raise_exception(...): the conversation does not fit the model's format."""


def _raise_exception(message: str) -> None:
    raise TemplateRaised(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False
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


def message_text(message: Any, index: int) -> str:
    """The text of one chat message: a string, or the concatenated text parts of a list."""
    if not isinstance(message, dict):
        raise _invalid(f"messages[{index}] must be an object with 'role' and 'content'")
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part_index, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise _invalid(f"messages[{index}].content[{part_index}]: only text parts are supported, got '{kind}'")
            texts.append(part["text"])
        return "\n".join(texts)
    raise _invalid(f"messages[{index}].content must be a string or a list of text parts")


def plain_messages(messages: Any) -> list[dict[str, str]]:
    """Validated messages as {'role', 'content'} dicts of strings; `developer` counts as `system`."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty list")
    plain = []
    for index, message in enumerate(messages):
        text = message_text(message, index)
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise _invalid(f"messages[{index}].role must be a non-empty string")
        plain.append({"role": "system" if role == "developer" else role, "content": text})
    return plain


def without_bos(prompt: str, bos_token: str, enabled: bool) -> str:
    """TGI's /generate adds the BOS token itself: a leading one would be doubled."""
    if enabled and bos_token and prompt.startswith(bos_token):
        return prompt[len(bos_token) :]
    return prompt


def uses_template(*kinds: str) -> Callable[[Callable], Callable]:
    """Marks a prompter as needing an endpoint `template:` of one of these kinds ('markers', 'jinja')."""

    def mark(prompter: Callable) -> Callable:
        prompter.template_kinds = kinds
        return prompter

    return mark


def _invalid(message: str) -> ProxyError:
    return ProxyError(400, message, code="invalid_messages", param="messages")
