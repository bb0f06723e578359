"""Prompt templates: Jinja rendered the way transformers renders chat templates.

Templates are compiled once, at load time. Rendering happens in an immutable sandbox with
`trim_blocks`, `lstrip_blocks`, the loopcontrols extension, `{% generation %}` blocks,
`raise_exception`, `strftime_now` and transformers' non-escaping `tojson`, and with the same
variables (`messages`, `tools`, `documents`, `add_generation_prompt`, the special tokens), so any
model's own `chat_template` can be used as is.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mooltiproxy.core.errors import ProxyError
from mooltiproxy.parsers.reasoning.harmony import GptOssParser

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


class _GenerationBlocks(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`, which transformers uses to mark what the assistant
    generated (for training masks): rendered as its content."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols", _GenerationBlocks]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment


ENVIRONMENT = _environment()


def compile_template(source: str) -> jinja2.Template:
    """Raises jinja2.TemplateSyntaxError for the loader to report."""
    return ENVIRONMENT.from_string(source)


def reads_content_parts(source: str) -> bool:
    """Whether the template loops over a message's `content`, as a template that takes content as a
    list of parts does (Gemma 3, Mistral Small 3.1, ...): vLLM's detection, on the syntax tree."""
    tree = ENVIRONMENT.parse(source)
    message_lists = _names_bound_to(tree, "messages")
    messages = {name for name, iterated in _loops(tree) if _reads(iterated, message_lists)}
    return any(_reads(iterated, messages, "content") for _, iterated in _loops(tree))


def _loops(tree: jinja2.nodes.Template) -> Iterable[tuple[str, jinja2.nodes.Node]]:
    """(loop variable, what it iterates over) of every `{% for name in ... %}`."""
    for loop in tree.find_all(jinja2.nodes.For):
        if isinstance(loop.target, jinja2.nodes.Name):
            yield loop.target.name, loop.iter


def _names_bound_to(tree: jinja2.nodes.Template, name: str) -> set[str]:
    """`name` and every variable `{% set %}` from it, a slice of it or a filter of it, transitively."""
    names, pending = {name}, deque([name])
    while pending:
        source = {pending.popleft()}
        for assign in tree.find_all(jinja2.nodes.Assign):
            target = assign.target
            if isinstance(target, jinja2.nodes.Name) and target.name not in names and _reads(assign.node, source):
                names.add(target.name)
                pending.append(target.name)
    return names


def _reads(node: jinja2.nodes.Node, names: set[str], key: str | None = None) -> bool:
    """Whether the expression is one of `names` (or its `key` item), through filters, tests and slices."""
    while True:
        if isinstance(node, jinja2.nodes.Filter | jinja2.nodes.Test) and node.node is not None:
            node = node.node
        elif isinstance(node, jinja2.nodes.Getitem) and isinstance(node.arg, jinja2.nodes.Slice):
            node = node.node
        else:
            break
    if key is not None:
        if isinstance(node, jinja2.nodes.Getitem) and isinstance(node.arg, jinja2.nodes.Const):
            if node.arg.value != key:
                return False
            node = node.node
        elif isinstance(node, jinja2.nodes.Getattr):
            if node.attr != key:
                return False
            node = node.node
        else:
            return False
    return isinstance(node, jinja2.nodes.Name) and node.ctx == "load" and node.name in names


@dataclass(frozen=True)
class PromptTemplate:
    """A `templates:` entry (or a built-in one), ready to render.

    Either `markers` (the role markers of the original format) or `jinja` (a whole template,
    e.g. a model's chat_template) is set. `tool_use` is a model's named template for requests with
    tools; `content_parts` says whether the template takes message content as a list of parts.
    """

    name: str
    markers: Mapping[str, str] = field(default_factory=dict)
    jinja: jinja2.Template | None = None
    tool_use: jinja2.Template | None = None
    bos_token: str = ""
    eos_token: str = ""
    # unk_token, pad_token, additional_special_tokens: the rest of the tokenizer's special tokens map.
    other_tokens: Mapping[str, Any] = field(default_factory=dict)
    content_parts: bool = False
    renders_tools: bool = False  # the template reads `tools` (a model trained for tool calls)
    tool_call_format: str | None = None  # the tool parser of the calls it shows the model (parsers.tools.detect)
    reasoning_format: str | None = None  # the reasoning parser of what its model thinks (parsers.reasoning.detect)
    stop: tuple[str, ...] = ()

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Any = None,
        **switches: Any,
    ) -> str:
        """`switches`: the template's own variables for this request (enable_thinking, ...)."""
        template = self.tool_use if tools and self.tool_use is not None else self.jinja
        if template is None:
            raise ProxyError(500, f"Template '{self.name}' has no Jinja template", code="template_error")
        try:
            return template.render(
                messages=messages,
                tools=tools,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.other_tokens,
                **switches,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateRaised as exc:
            raise ProxyError(400, f"Template '{self.name}': {exc}", code="invalid_messages", param="messages") from None
        except Exception as exc:  # a template is code run on the client's messages: any failure is theirs
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
    # gpt-oss's harmony ends each message of a turn with <|end|>; its turn ends at <|return|> or
    # <|call|>, its end-of-sequence tokens.
    harmony = GptOssParser().detect(source)
    stops.extend(token for token in END_OF_TURN_TOKENS if token in source and not (harmony and token == "<|end|>"))
    return tuple(dict.fromkeys(stop for stop in stops if stop))
