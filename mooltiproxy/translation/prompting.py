"""Chat messages made ready for a prompter: validated, flattened to text, and the helpers prompters share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mooltiproxy.config.settings import Endpoint
from mooltiproxy.config.templates import PromptTemplate
from mooltiproxy.core.errors import ProxyError

# Original Llama-2 default system prompt, used when a conversation has no system message.
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe. Please ensure that your responses are socially unbiased and positive in nature. "
    "If a question does not make any sense, or is not factually coherent, explain why instead of "
    "answering something not correct. If you don't know the answer to a question, please don't share "
    "false information."
)


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


def template_of(endpoint: Endpoint) -> PromptTemplate:
    """The endpoint's template; the loader makes sure a prompter that needs one has one."""
    if endpoint.template is None:
        raise ProxyError(500, "This endpoint has no prompt template", code="template_error")
    return endpoint.template


def _invalid(message: str) -> ProxyError:
    return ProxyError(400, message, code="invalid_messages", param="messages")
