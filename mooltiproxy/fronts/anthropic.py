"""Anthropic's Messages API (what Claude Code speaks) <-> OpenAI Chat Completions, the pivot.

Chained with a target's own mappers, for instance onto TGI's /generate:

    /v1/messages:
      path: /generate
      in: [messagesReqAnthropicToOpenAI, chatReqOpenAItoTGI]
      out: [chatAnsTGItoOpenAI, messagesAnsOpenAIToAnthropic]
      prompter: chat_template
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from mooltiproxy.config.plugin_specs import StreamTranslator
from mooltiproxy.config.settings import Endpoint
from mooltiproxy.core.errors import ContextLengthExceeded, ProxyError
from mooltiproxy.core.ids import new_id
from mooltiproxy.core.sealing import Sealer
from mooltiproxy.forwarding.models import ListedModel
from mooltiproxy.fronts.base import Front
from mooltiproxy.serving.context import MapperContext
from mooltiproxy.translation.chat_completions import first_choice
from mooltiproxy.translation.kinds import ANTHROPIC_COUNT, ANTHROPIC_MESSAGES, OPENAI_CHAT, TGI_TOKENIZE
from mooltiproxy.translation.marks import mapper
from mooltiproxy.translation.sse import named_event

log = logging.getLogger("mooltiproxy.anthropic")

# Claude Code's first system line, different on every request: dropped so a target's prefix cache works.
BILLING_HEADER = "x-anthropic-billing-header"
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


# Anthropic's error `type` for each status; 529 is its own "overloaded".
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _error(error: ProxyError) -> dict[str, Any]:
    """An error as Anthropic writes it, in an answer's body and in a stream's error event."""
    message = error.message
    if isinstance(error, ContextLengthExceeded):  # Anthropic's own words, on which Claude Code compacts
        message = f"prompt is too long: {error.prompt_tokens} tokens > {error.limit} maximum"
    kind = _ERROR_TYPES.get(error.status, "api_error" if error.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


class MessagesFront(Front):
    """Anthropic's Messages API. Its clients send the key as `x-api-key`, say `anthropic-version`
    on every request, and (Claude Code) HEAD / and /api/hello without a key before anything else."""

    kind = ANTHROPIC_MESSAGES
    key_headers = ("x-api-key",)
    probes = frozenset({"/", "/api/hello"})

    def error_body(self, error: ProxyError, request_id: str | None) -> bytes:
        # Every error on this front's routes, the guard's 401 and 403 and the limits' 429 included.
        return json.dumps({**_error(error), "request_id": request_id}).encode()

    def claims_listing(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        return "anthropic-version" in headers

    def model_list(self, models: Mapping[str, ListedModel]) -> dict[str, Any]:
        data = [
            {"type": "model", "id": model, "display_name": model, "created_at": "1970-01-01T00:00:00Z"}
            for model in models
        ]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"data": data, "has_more": False, "first_id": first, "last_id": last}


def _invalid(message: str) -> ProxyError:
    return ProxyError(400, message, code="invalid_request_error")


@mapper(ANTHROPIC_MESSAGES, OPENAI_CHAT)
def messagesReqAnthropicToOpenAI(payload: dict, endpoint: Endpoint, context: MapperContext) -> dict[str, Any]:
    """An Anthropic Messages request -> an OpenAI chat request. Fields with no meaning for an
    OpenAI-style target (`thinking`, `cache_control`, `context_management`, ...) are ignored."""
    max_tokens = payload.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _invalid("max_tokens: a positive integer is required")
    return {**_chat_request(payload, context.sealer), "max_tokens": max_tokens}


@mapper(ANTHROPIC_MESSAGES, OPENAI_CHAT)
def countReqAnthropicToOpenAI(payload: dict, endpoint: Endpoint, context: MapperContext) -> dict[str, Any]:
    """A /v1/messages/count_tokens request (a Messages request without max_tokens) -> OpenAI chat."""
    return _chat_request(payload, context.sealer)


@mapper(TGI_TOKENIZE, ANTHROPIC_COUNT)
def countAnsTGItoAnthropic(payload: Any, endpoint: Endpoint, context: MapperContext) -> dict[str, Any]:
    """TGI's /tokenize answer (the prompt's tokens, special ones included) -> Anthropic's count."""
    if not isinstance(payload, list):
        raise ProxyError(502, "The target's /tokenize answer is not a list of tokens", code="upstream_error")
    return {"input_tokens": len(payload)}


def _chat_request(payload: dict, sealer: Sealer) -> dict[str, Any]:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: a non-empty list is required")
    chat: list[dict[str, Any]] = []
    system = _system_text(payload.get("system"))
    if system:
        chat.append({"role": "system", "content": system})
    for index, message in enumerate(messages):
        chat.extend(_chat_messages(message, index, sealer))
    request: dict[str, Any] = {"model": payload.get("model"), "messages": chat}
    for name in ("temperature", "top_p", "top_k"):
        if payload.get(name) is not None:
            request[name] = payload[name]
    if payload.get("stop_sequences") is not None:
        request["stop"] = payload["stop_sequences"]
    if payload.get("stream") is True:
        # The usage comes in the last chunk: Anthropic's message_delta carries it.
        request.update(stream=True, stream_options={"include_usage": True})
    effort = _effort(payload)
    if effort is not None:
        request["reasoning_effort"] = effort
    metadata = payload.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        request["user"] = metadata["user_id"]
    tools = payload.get("tools")
    if tools:
        request["tools"] = [_function_tool(tool, index) for index, tool in enumerate(tools)]
        choice = payload.get("tool_choice")
        if isinstance(choice, dict):
            if choice.get("type") == "tool":
                request["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
            elif choice.get("type") in _TOOL_CHOICES:
                request["tool_choice"] = _TOOL_CHOICES[choice["type"]]
            if choice.get("disable_parallel_tool_use") is True:
                request["parallel_tool_calls"] = False
    return request


# Budgets below these give the pivot's low and medium efforts; anything larger, high.
_BUDGETS = ((4096, "low"), (16384, "medium"))


def _effort(payload: dict) -> str | None:
    """`output_config.effort`, else what `thinking` says: disabled is no reasoning, an enabled
    budget an effort by its size (a budget is not enforced: the effort picks the template's
    switch), adaptive the model's own choice."""
    output_config = payload.get("output_config")
    effort = output_config.get("effort") if isinstance(output_config, dict) else None
    if effort in ("low", "medium", "high"):
        return str(effort)
    thinking = payload.get("thinking")
    if not isinstance(thinking, dict):
        return None
    if thinking.get("type") == "disabled":
        return "none"
    budget = thinking.get("budget_tokens")
    if thinking.get("type") == "enabled" and isinstance(budget, int) and not isinstance(budget, bool):
        return next((name for limit, name in _BUDGETS if budget < limit), "high")
    return None


def _system_text(system: Any) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        blocks = [system]
    elif isinstance(system, list):
        blocks = [block.get("text", "") for block in system if isinstance(block, dict) and block.get("type") == "text"]
    else:
        raise _invalid("system: a string or a list of text blocks is expected")
    text = "\n\n".join(block for block in blocks if not block.startswith(BILLING_HEADER))
    return text


def _chat_messages(message: Any, index: int, sealer: Sealer) -> list[dict[str, Any]]:
    """One Anthropic message as OpenAI messages: tool results become `tool` messages of their own,
    and the thinking this proxy signed becomes the assistant message's `reasoning_content`, which
    the template renders as the model's earlier reasoning."""
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system"):
        raise _invalid(f"messages.{index}: an object with role user or assistant is expected")
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _invalid(f"messages.{index}.content: a string or a list of content blocks is expected")
    parts: list[dict[str, Any]] = []  # text and images, in order
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for block_index, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        where = f"messages.{index}.content.{block_index}"
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image_part(block, where))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input", {}), ensure_ascii=False)
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        elif kind == "tool_result":
            results.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": _result_content(block, where)}
            )
        elif kind == "document":
            raise _invalid(f"{where}: document blocks are not supported by this target, which reads text only")
        elif kind == "thinking":
            if sealer.vouches(block.get("signature"), block.get("thinking")):
                thoughts.append(block["thinking"])
            else:  # another model's, or altered: never given to the model as its own
                log.info("%s: a thinking block this proxy did not sign is left out", where)
        elif kind == "redacted_thinking":
            continue  # another provider's encrypted reasoning: nothing a target can read
        else:
            raise _invalid(f"{where}: unknown content block type '{kind}'")
    chat: list[dict[str, Any]] = results
    if parts or calls or thoughts:
        entry: dict[str, Any] = {"role": role, "content": _content(parts)}
        if calls:
            entry["tool_calls"] = calls
        if thoughts and role == "assistant":
            entry["reasoning_content"] = "\n\n".join(thoughts)
        chat.append(entry)
    return chat


def _result_content(block: dict[str, Any], where: str) -> str | list[dict[str, Any]] | None:
    """A tool result's text, or its text and images (a screenshot a tool took) as parts."""
    content = block.get("content")
    if not isinstance(content, list):
        return "" if content is None else str(content)
    parts = [
        {"type": "text", "text": str(part.get("text", ""))} if part.get("type") == "text" else _image_part(part, where)
        for part in content
        if isinstance(part, dict) and part.get("type") in ("text", "image")
    ]
    return _content(parts) or ""


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    """Text parts as one string, as before images; with an image, the parts (the pivot's)."""
    if any(part["type"] == "image_url" for part in parts):
        return parts
    return "".join(part["text"] for part in parts) if parts else None


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    """An image block as the pivot's image_url part: base64 data as a data URL, or its URL."""
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise _invalid(f"{where}: an image block needs a base64 or url source")
    return {"type": "image_url", "image_url": {"url": url}}


def _function_tool(tool: Any, index: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise _invalid(f"tools.{index}: a tool with a name is expected")
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise _invalid(f"tools.{index}: the server tool '{kind}' ({tool['name']}) cannot run on this target")
    function = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _anthropic_stream(endpoint: Endpoint, context: MapperContext) -> AnthropicStream:
    model = context.body.get("model") if isinstance(context.body, dict) else None
    return AnthropicStream(model if isinstance(model, str) else "unknown", context.sealer)


@mapper(OPENAI_CHAT, ANTHROPIC_MESSAGES, streams_with=_anthropic_stream)
def messagesAnsOpenAIToAnthropic(payload: Any, endpoint: Endpoint, context: MapperContext) -> dict[str, Any]:
    """An OpenAI chat completion -> an Anthropic message."""
    choice, message = first_choice(payload)
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": context.sealer.seal(reasoning)})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or new_id("toolu_"),
                "name": function.get("name"),
                "input": _input(function),
            }
        )
    usage = payload.get("usage") or {}
    model = context.body.get("model") if isinstance(context.body, dict) else None
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model if isinstance(model, str) else payload.get("model"),
        "content": content,
        "stop_reason": _stop_reason(choice.get("finish_reason"), any(block["type"] == "tool_use" for block in content)),
        "stop_sequence": None,
        "usage": {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0)},
    }


def _stop_reason(finish_reason: Any, called: bool) -> str:
    """Anthropic's stop reason; never `tool_use` without a tool_use block, on which Claude Code
    would wait for a call that never comes."""
    reason = _STOP_REASONS.get(str(finish_reason), "end_turn")
    return "end_turn" if reason == "tool_use" and not called else reason


def _input(function: dict[str, Any]) -> Any:
    try:
        value = json.loads(function.get("arguments") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class AnthropicStream(StreamTranslator):
    """OpenAI chat chunks -> Anthropic's named events: message_start, a content block per run of
    reasoning, text or tool call (with thinking_delta and one signature_delta, text_delta,
    input_json_delta), message_delta with the stop reason and the usage, message_stop, and `ping`
    while the stream is quiet. No [DONE]: message_stop ends it."""

    done = b""
    ping = named_event("ping", {"type": "ping"})  # the keep-alive of a quiet stream

    def __init__(self, model: str, sealer: Sealer):
        self._model = model
        self._sealer = sealer
        self._started = False
        self._block: str | None = None  # "thinking", "text" or "tool_use" while a block is open
        self._thinking: list[str] = []  # the open thinking block's text, signed when it closes
        self._called = False
        self._index = -1
        self._stop_reason: Any = None  # OpenAI's finish_reason
        self._usage = {"input_tokens": 0, "output_tokens": 0}

    def event(self, chunk: Any) -> list[bytes]:
        out = self._start()
        usage = chunk.get("usage") if isinstance(chunk, dict) else None
        if isinstance(usage, dict):
            self._usage = {
                "input_tokens": usage.get("prompt_tokens", 0),
                "output_tokens": usage.get("completion_tokens", 0),
            }
        for choice in chunk.get("choices", []) if isinstance(chunk, dict) else []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                if self._block != "thinking":
                    out += self._open({"type": "thinking", "thinking": "", "signature": ""}, "thinking")
                self._thinking.append(delta["reasoning_content"])
                out.append(self._delta({"type": "thinking_delta", "thinking": delta["reasoning_content"]}))
            if delta.get("content"):
                if self._block != "text":
                    out += self._open({"type": "text", "text": ""}, "text")
                out.append(self._delta({"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                if call.get("id") or function.get("name"):
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id") or new_id("toolu_"),
                        "name": function.get("name"),
                        "input": {},
                    }
                    out += self._open(block, "tool_use")
                    self._called = True
                if function.get("arguments"):
                    out.append(self._delta({"type": "input_json_delta", "partial_json": function["arguments"]}))
            if choice.get("finish_reason"):
                self._stop_reason = choice["finish_reason"]
        return out

    def end(self) -> list[bytes]:
        out = self._start() + self._close()
        delta = {"stop_reason": _stop_reason(self._stop_reason, self._called), "stop_sequence": None}
        # Current SDKs read input_tokens here: TGI tells the prompt's length only at the end.
        out.append(named_event("message_delta", {"type": "message_delta", "delta": delta, "usage": self._usage}))
        out.append(named_event("message_stop", {"type": "message_stop"}))
        return out

    def error_frame(self, error: ProxyError) -> bytes:
        return named_event("error", _error(error))

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},  # placeholders: the counts come at the end
        }
        return [named_event("message_start", {"type": "message_start", "message": message})]

    def _open(self, block: dict[str, Any], kind: str) -> list[bytes]:
        out = self._close()
        self._index += 1
        self._block = kind
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return [*out, named_event("content_block_start", start)]

    def _close(self) -> list[bytes]:
        if self._block is None:
            return []
        out = []
        if self._block == "thinking":
            signature = self._sealer.seal("".join(self._thinking))
            out.append(self._delta({"type": "signature_delta", "signature": signature}))
            self._thinking = []
        self._block = None
        return [*out, named_event("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return named_event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})
