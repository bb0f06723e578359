"""Chat messages made ready for a prompter: validated, flattened to text, and the helpers prompters share."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, overload

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


@overload
def message_content(message: Any, index: int, keep_parts: Literal[False] = False) -> str: ...
@overload
def message_content(message: Any, index: int, keep_parts: bool) -> str | list[Any]: ...
def message_content(message: Any, index: int, keep_parts: bool = False) -> str | list[Any]:
    """The content of one chat message: a string as it is; a list of text parts joined with
    newlines, or, for a template that reads parts itself, the list unchanged (as transformers
    passes it)."""
    if not isinstance(message, dict):
        raise _invalid(f"messages[{index}] must be an object with 'role' and 'content'")
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(f"messages[{index}].content must be a string or a list of text parts")
    for part_index, part in enumerate(content):
        if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise _invalid(f"messages[{index}].content[{part_index}]: only text parts are supported, got '{kind}'")
    return content if keep_parts else "\n".join(part["text"] for part in content)


def plain_messages(messages: Any, keep_parts: bool = False) -> list[dict[str, Any]]:
    """Validated messages as {'role', 'content'} dicts; `developer` counts as `system`. Content is
    a string, or with `keep_parts` a list of text parts when the client sent one."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty list")
    plain = []
    for index, message in enumerate(messages):
        content = message_content(message, index, keep_parts)
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise _invalid(f"messages[{index}].role must be a non-empty string")
        entry: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": content}
        # reasoning_content: the model's earlier reasoning, which templates render (or drop) themselves.
        for name in ("tool_call_id", "name", "reasoning_content"):
            if isinstance(message.get(name), str):
                entry[name] = message[name]
        if isinstance(message.get("tool_calls"), list):
            entry["tool_calls"] = [_call_for_template(call) for call in message["tool_calls"]]
        plain.append(entry)
    return plain


def _call_for_template(call: Any) -> Any:
    """A tool call as templates expect it: `arguments` as a mapping, where OpenAI sends a JSON string
    (transformers' convention, which vLLM follows)."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    return {**call, "function": {**call["function"], "arguments": parsed_arguments(call["function"].get("arguments"))}}


def parsed_arguments(arguments: Any) -> Any:
    """A tool call's arguments as the value its JSON string says (left as they are if not JSON)."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            pass
    return arguments


def render_chat(
    messages: Any, endpoint: Endpoint, tools: Any = None, switches: Mapping[str, Any] | None = None
) -> tuple[str, list[str]]:
    """(prompt, stop strings) from the endpoint's Jinja template, rendered as transformers renders it,
    with the request's tools (in OpenAI's function format, as templates expect them) and switches."""
    template = template_of(endpoint)
    if tools and not template.renders_tools:
        raise ProxyError(
            400, f"Template '{template.name}' renders no tools", code="invalid_request_error", param="tools"
        )
    prompt = template.render(
        plain_messages(messages, keep_parts=template.content_parts), tools=tools, **(switches or {})
    )
    return without_bos(prompt, template.bos_token, endpoint.strip_bos), list(template.stop)


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
