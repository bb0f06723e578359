"""The built-in prompters, which build the prompt of TGI's /generate: `chat_template` (a model's own
Hugging Face chat template, rendered as transformers renders it), and the original project's
`fromTemplate` (role markers) and `llama2_chat`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mooltiproxy.config.settings import Endpoint
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.translation.marks import prompter
from mooltiproxy.translation.prompting import (
    DEFAULT_SYSTEM_PROMPT,
    plain_messages,
    render_chat,
    template_of,
    without_bos,
)

# These two formats are fixed, so they are built in Python: rendering them with Jinja took several
# times longer, on every translated request.
_LLAMA2_STOPS = ["[INST]"]


def _split_system(messages: list[dict[str, str]], endpoint: Endpoint) -> tuple[str, list[dict[str, str]]]:
    if messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return endpoint.system_prompt if endpoint.system_prompt is not None else DEFAULT_SYSTEM_PROMPT, messages


@prompter("markers", "jinja")
def fromTemplate(
    messages: Any, endpoint: Endpoint, tools: Any = None, switches: Mapping[str, Any] | None = None
) -> tuple[str, list[str]]:
    """The original format built from a `templates:` entry's markers, or its whole Jinja template."""
    template = template_of(endpoint)
    if template.jinja is not None:
        return render_chat(messages, endpoint, tools, switches)
    plain = plain_messages(messages)
    system, turns = _split_system(plain, endpoint)
    for index, message in enumerate(turns, start=len(plain) - len(turns)):
        if message["role"] not in template.markers:
            raise ProxyError(
                400,
                f"messages[{index}]: role '{message['role']}' has no marker in template '{template.name}'",
                code="invalid_messages",
                param="messages",
            )
    # The first system message (or the default one) goes right after `preprompt` and is closed by
    # `start`; every other message is its role's marker followed by its content.
    markers = template.markers
    prompt = "".join(
        [
            markers["preprompt"],
            system,
            markers["start"],
            *(markers[message["role"]] + message["content"] for message in turns),
            markers["assistant"],
        ]
    )
    stops = [template.markers["user"], *template.stop] if template.markers["user"] else list(template.stop)
    return without_bos(prompt, template.bos_token, endpoint.strip_bos), stops


@prompter()
def llama2_chat(messages: Any, endpoint: Endpoint) -> tuple[str, list[str]]:
    """`[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s><s>[INST] {user} [/INST]`."""
    plain = plain_messages(messages)
    system, turns = _split_system(plain, endpoint)
    offset = len(plain) - len(turns)
    for index, message in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise ProxyError(
                400,
                f"messages[{index + offset}]: llama2_chat needs an optional system message, then roles "
                f"alternating user/assistant/user/..., got '{message['role']}' where '{expected}' belongs",
                code="invalid_messages",
                param="messages",
            )
    if not turns:
        raise ProxyError(400, "llama2_chat needs at least one user message", code="invalid_messages", param="messages")
    parts = [f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{turns[0]['content'].strip()} [/INST]"]
    for index in range(1, len(turns)):
        content = turns[index]["content"].strip()
        parts.append(f"<s>[INST] {content} [/INST]" if index % 2 == 0 else f" {content} </s>")
    return "".join(parts), list(_LLAMA2_STOPS)


@prompter("jinja")
def chat_template(
    messages: Any, endpoint: Endpoint, tools: Any = None, switches: Mapping[str, Any] | None = None
) -> tuple[str, list[str]]:
    """The endpoint's template (a `templates:` entry or a built-in one such as `llama3`)."""
    return render_chat(messages, endpoint, tools, switches)
