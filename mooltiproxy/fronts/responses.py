"""OpenAI's Responses API (what Codex speaks) <-> OpenAI Chat Completions, the pivot:

    /responses:
      path: /v1/chat/completions
      in: [responsesReqToOpenAI, chatReqOpenAItoCompatible]
      out: [chatAnsCompatibleToOpenAI, responsesAnsOpenAIToResponses]

A request carries its whole history (`store: false`, as Codex sends it), or names the response it
follows (`previous_response_id`): the proxy keeps responses in its state store
(stored_responses.py, beside this module) and puts the earlier turns back before mapping.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from mooltiproxy.config.plugin_specs import StreamTranslator
from mooltiproxy.config.settings import Endpoint
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.ids import new_id
from mooltiproxy.core.mapping import Note, Notes
from mooltiproxy.core.sealing import Sealer
from mooltiproxy.forwarding.models import ListedModel
from mooltiproxy.fronts.base import Front, FrontServices
from mooltiproxy.fronts.stored_responses import FINAL, ROUTE, StoredResponses
from mooltiproxy.serving.context import MapperContext
from mooltiproxy.serving.own_routes import OwnRoute
from mooltiproxy.translation.chat_completions import first_choice
from mooltiproxy.translation.kinds import OPENAI_CHAT, OPENAI_RESPONSES
from mooltiproxy.translation.marks import mapper
from mooltiproxy.translation.prompting import parsed_arguments
from mooltiproxy.translation.sse import named_event

log = logging.getLogger("mooltiproxy.responses")

_REQUEST = Note[dict[str, Any]]("responses.request")  # the client's request, for the answer's echo of it
_INPUT_TEXT = ("input_text", "output_text", "text")


class ResponsesFront(Front):
    """OpenAI's Responses API, with the responses it keeps: GET and DELETE /v1/responses/{id}, and
    `previous_response_id` expanded before the request is mapped."""

    kind = OPENAI_RESPONSES

    def __init__(self, services: FrontServices):
        super().__init__(services)
        system = services.system
        self._kept = StoredResponses(services.store, system.responses_ttl, system.responses_max_bytes)

    def own_routes(self) -> tuple[OwnRoute, ...]:
        return (OwnRoute(ROUTE, self._kept.answer, frozenset({"GET", "DELETE"})),)

    async def before(self, context: MapperContext) -> None:
        await self._kept.expand(context)

    async def after(self, context: MapperContext) -> None:
        await self._kept.keep(context)

    def claims_listing(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """Codex asks `GET /models?client_version=…` and reads the answer as its own catalog."""
        return "client_version" in query or headers.get("originator", "").startswith("codex")

    def model_list(self, models: Mapping[str, ListedModel]) -> dict[str, Any]:
        return {"models": [_codex_model(model, listed, rank) for rank, (model, listed) in enumerate(models.items())]}


# What Codex is told of a model it knows nothing of: plain function tools (apply_patch included),
# no reasoning levels to choose from, and the instructions every turn starts with.
CODEX_INSTRUCTIONS = (
    "You are a coding agent working in the user's workspace through the tools you are given: read "
    "files, run commands and change code with them, then say briefly what you did."
)


def _codex_model(model: str, listed: ListedModel, rank: int) -> dict[str, Any]:
    """An entry of Codex's catalog: its ModelInfo (codex-rs/protocol/src/openai_models.rs)."""
    entry: dict[str, Any] = {
        "slug": model,
        "display_name": model,
        "description": f"{model}, served by target {listed.target} through mooltiproxy",
        "supported_reasoning_levels": [],
        "shell_type": "shell_command",
        "visibility": "list",
        "supported_in_api": True,
        "priority": rank,
        "upgrade": None,
        "base_instructions": CODEX_INSTRUCTIONS,
        "supports_reasoning_summaries": False,
        "support_verbosity": False,
        "default_verbosity": None,
        "apply_patch_tool_type": "function",
        "truncation_policy": {"mode": "tokens", "limit": 10_000},
        "supports_parallel_tool_calls": True,
        "experimental_supported_tools": [],
        "input_modalities": ["text"],
    }
    if listed.context_length is not None:
        entry["context_window"] = listed.context_length
    return entry


def _invalid(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, code="invalid_request_error", param=param)


@mapper(OPENAI_RESPONSES, OPENAI_CHAT)
def responsesReqToOpenAI(payload: dict, endpoint: Endpoint, context: MapperContext) -> dict[str, Any]:
    """A Responses request -> an OpenAI chat request. `reasoning.effort` is the chat request's
    `reasoning_effort`; `store`, `metadata` and the like are accepted and have no effect."""
    messages: list[dict[str, Any]] = []
    if isinstance(payload.get("instructions"), str) and payload["instructions"]:
        messages.append({"role": "system", "content": payload["instructions"]})
    source = payload.get("input")
    if isinstance(source, str):
        messages.append({"role": "user", "content": source})
    elif isinstance(source, list):
        for index, item in enumerate(source):
            _add_item(messages, item, index, context.sealer)
        # Reasoning that led to nothing the history kept has no turn to go with.
        messages = [message for message in messages if message["content"] is not None or message.get("tool_calls")]
    else:
        raise _invalid("input: a string or a list of items is expected", "input")
    request: dict[str, Any] = {"model": payload.get("model"), "messages": messages}
    for name in ("temperature", "top_p", "parallel_tool_calls"):
        if payload.get(name) is not None:
            request[name] = payload[name]
    if payload.get("max_output_tokens") is not None:
        request["max_tokens"] = payload["max_output_tokens"]
    reasoning = payload.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        request["reasoning_effort"] = reasoning["effort"]
    text_format = (payload.get("text") or {}).get("format") if isinstance(payload.get("text"), dict) else None
    if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
        schema = {"name": text_format.get("name", "answer"), "schema": text_format.get("schema")}
        request["response_format"] = {"type": "json_schema", "json_schema": schema}
    tools = [function for tool in payload.get("tools") or [] for function in _function_tools(tool)]
    if tools:
        request["tools"] = tools
        choice = payload.get("tool_choice")
        if choice in ("auto", "required", "none"):
            request["tool_choice"] = choice
        elif isinstance(choice, dict) and choice.get("name"):
            request["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    if payload.get("stream") is True:
        request.update(stream=True, stream_options={"include_usage": True})
    context.notes[_REQUEST] = payload
    return request


def _add_item(messages: list[dict[str, Any]], item: Any, index: int, sealer: Sealer) -> None:
    if not isinstance(item, dict):
        raise _invalid(f"input[{index}]: an item object is expected", "input")
    kind = item.get("type", "message")
    if kind == "message":
        role = "system" if item.get("role") == "developer" else item.get("role")
        if role == "assistant" and _reasoning_only(messages):
            messages[-1]["content"] = _text(item.get("content"))  # the answer its reasoning led to
        else:
            messages.append({"role": role, "content": _message_content(item.get("content"))})
    elif kind == "reasoning":
        reasoning = _replayed_reasoning(item, sealer)
        if reasoning:
            messages.append({"role": "assistant", "content": None, "reasoning_content": reasoning})
        else:
            log.info("input[%d]: a reasoning item this proxy cannot read or did not seal is left out", index)
    elif kind in ("function_call", "custom_tool_call"):
        arguments = item.get("arguments") if kind == "function_call" else json.dumps({"input": item.get("input", "")})
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": arguments},
        }
        if messages and messages[-1]["role"] == "assistant" and not messages[-1].get("content"):
            messages[-1].setdefault("tool_calls", []).append(call)  # parallel calls: one assistant turn
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        messages.append(
            {
                "role": "tool",
                "tool_call_id": item.get("call_id"),
                "content": output if isinstance(output, str) else _text(output),
            }
        )
    elif kind in ("local_shell_call", "local_shell_call_output", "web_search_call"):
        log.info("input[%d]: a %s item has no meaning for the target and is left out", index, kind)
    else:
        raise _invalid(f"input[{index}]: unknown item type '{kind}'", "input")


def _reasoning_only(messages: list[dict[str, Any]]) -> bool:
    last = messages[-1] if messages else {}
    return last.get("role") == "assistant" and "reasoning_content" in last and last["content"] is None


def _replayed_reasoning(item: dict[str, Any], sealer: Sealer) -> str:
    """A replayed reasoning item's text: from its `encrypted_content` when it has one (only this
    proxy's opens: another model's, or an altered one, gives nothing), else from its `content`."""
    if item.get("encrypted_content") is not None:
        return sealer.open(item["encrypted_content"]) or ""
    parts = item.get("content")
    if not isinstance(parts, list):
        return ""
    return "".join(
        part["text"]
        for part in parts
        if isinstance(part, dict) and part.get("type") == "reasoning_text" and isinstance(part.get("text"), str)
    )


def _message_content(content: Any) -> str | list[dict[str, Any]]:
    """A message item's text; with an `input_image`, its text and images as the pivot's parts."""
    if not isinstance(content, list) or not any(_is_image(part) for part in content):
        return _text(content)
    parts: list[dict[str, Any]] = []
    for part in content:
        if _is_image(part):
            parts.append({"type": "image_url", "image_url": {"url": part.get("image_url")}})
        elif isinstance(part, dict) and part.get("type") in _INPUT_TEXT:
            parts.append({"type": "text", "text": str(part.get("text", ""))})
    return parts


def _is_image(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "input_image"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") in _INPUT_TEXT
        )
    return ""


def _function_tools(tool: Any) -> list[dict[str, Any]]:
    """A tool the target can run, as chat function tools (a namespace's, flattened); none, and a
    log line, for the others (hosted tools such as web_search)."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind == "function":
        function = {"name": tool.get("name"), "parameters": tool.get("parameters") or {"type": "object"}}
        if tool.get("description"):
            function["description"] = tool["description"]
        return [{"type": "function", "function": function}]
    if kind == "custom":  # free-form input (apply_patch's): offered as a function of one string
        parameters = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}
        function = {"name": tool.get("name"), "description": tool.get("description", ""), "parameters": parameters}
        return [{"type": "function", "function": function}]
    if kind == "namespace" and isinstance(tool.get("tools"), list):
        return [function for inner in tool["tools"] for function in _function_tools(inner)]
    log.info("a %s tool cannot run on this target and is left out", kind)
    return []


def _custom_names(tools: Any) -> frozenset[str]:
    """The request's free-form tools, whose calls go back as custom_tool_call items."""
    names: set[str] = set()
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("type") == "custom" and isinstance(tool.get("name"), str):
            names.add(tool["name"])
        elif isinstance(tool, dict) and tool.get("type") == "namespace":
            names |= _custom_names(tool.get("tools"))
    return frozenset(names)


def _stream(endpoint: Endpoint, context: MapperContext) -> ResponsesStream:
    return ResponsesStream(Envelope(context), context.notes)


@mapper(OPENAI_CHAT, OPENAI_RESPONSES, streams_with=_stream)
def responsesAnsOpenAIToResponses(payload: Any, endpoint: Endpoint, context: MapperContext) -> dict[str, Any]:
    """An OpenAI chat completion -> a Response."""
    choice, message = first_choice(payload)
    envelope = Envelope(context)
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        output.append(envelope.reasoning_item(new_id("rs_"), reasoning))
    if message.get("content"):
        output.append(_message_item(new_id("msg_"), message["content"]))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(envelope.call_item(call.get("id") or new_id("call_"), function))
    response = envelope.response(output, choice.get("finish_reason"), payload.get("usage") or {})
    context.notes[FINAL] = response  # kept when the request asks it to be
    return response


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": [part]}


def _input_of(arguments: str) -> str:
    """A free-form tool's input, from the one-string function it was offered as."""
    value = parsed_arguments(arguments or "{}")
    return str(value.get("input", "")) if isinstance(value, dict) else arguments


class Envelope:
    """The fields of a Response that echo its request."""

    def __init__(self, context: MapperContext):
        self.id = new_id("resp_")
        self.created_at = int(time.time())
        self._request: dict[str, Any] = context.notes.get(_REQUEST) or {}
        self._sealer = context.sealer
        self._custom = _custom_names(self._request.get("tools"))

    def call_item(self, call_id: str, function: dict[str, Any], status: str = "completed") -> dict[str, Any]:
        """A call as the request's tool asked to be called: a custom_tool_call with its `input` for a
        free-form tool, else a function_call with its `arguments`."""
        name, arguments = function.get("name"), function.get("arguments") or ""
        if name in self._custom:
            item = {"id": new_id("ctc_"), "type": "custom_tool_call", "status": status, "call_id": call_id}
            return {**item, "name": name, "input": _input_of(arguments)}
        return {
            "id": new_id("fc_"),
            "type": "function_call",
            "status": status,
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
        }

    def reasoning_item(self, item_id: str, text: str) -> dict[str, Any]:
        """A reasoning output item; with its text sealed in `encrypted_content` when the request
        asks for it (Codex does, with `store: false`, and sends the item back on the next turn)."""
        item: dict[str, Any] = {"id": item_id, "type": "reasoning", "status": "completed", "summary": []}
        item["content"] = [{"type": "reasoning_text", "text": text}]
        include = self._request.get("include")
        if isinstance(include, list) and "reasoning.encrypted_content" in include:
            item["encrypted_content"] = self._sealer.seal(text)
        return item

    def response(
        self, output: list[dict[str, Any]], finish_reason: Any, usage: dict[str, Any], status: str | None = None
    ) -> dict[str, Any]:
        request = self._request
        incomplete = finish_reason == "length"
        input_tokens, output_tokens = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status or ("incomplete" if incomplete else "completed"),
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"),
            "model": request.get("model") or "unknown",
            "output": output,
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": request.get("previous_response_id"),
            "reasoning": None,
            "store": request.get("store", True) is not False,
            "temperature": request.get("temperature"),
            "text": request.get("text") or {"format": {"type": "text"}},
            "tool_choice": request.get("tool_choice", "auto"),
            "tools": request.get("tools") or [],
            "top_p": request.get("top_p"),
            "truncation": "disabled",
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "metadata": request.get("metadata") or {},
        }


class ResponsesStream(StreamTranslator):
    """OpenAI chat chunks -> the Responses API's typed events, numbered by `sequence_number`:
    response.created and .in_progress, then per output item .output_item.added, its text deltas
    (or function call argument deltas), their .done, .output_item.done, and response.completed
    (or .incomplete) carrying the whole response with its usage. No [DONE]."""

    done = b""

    def __init__(self, envelope: Envelope, notes: Notes):
        self._envelope = envelope
        self._notes = notes  # where the finished Response is left, for the store
        self._sequence = 0
        self._started = False
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the item being streamed
        self._text = ""
        self._calls: dict[int, dict[str, Any]] = {}
        self._finish: Any = None
        self._usage: dict[str, Any] = {}

    def event(self, chunk: Any) -> list[bytes]:
        out = self._start()
        if not isinstance(chunk, dict):
            return out
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                out += self._text_delta("reasoning", "response.reasoning_text.delta", delta["reasoning_content"])
            if delta.get("content"):
                out += self._text_delta("message", "response.output_text.delta", delta["content"], logprobs=[])
            for call in delta.get("tool_calls") or []:
                out += self._call_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _text_delta(self, kind: str, event: str, text: str, **fields: Any) -> list[bytes]:
        """The next piece of a reasoning or message item's text, the item opened when it is new."""
        out = self._open_text_item(kind) if self._open is None or self._open["type"] != kind else []
        self._text += text
        out.append(self._emit(event, item_id=self._open_id(), content_index=0, delta=text, **fields))
        return out

    def _open_text_item(self, kind: str) -> list[bytes]:
        if kind == "reasoning":
            return self._open_item({"id": new_id("rs_"), "type": "reasoning", "status": "in_progress", "summary": []})
        out = self._open_item(_message_item(new_id("msg_"), "", "in_progress"))
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        out.append(self._emit("response.content_part.added", item_id=self._open_id(), content_index=0, part=part))
        return out

    def _call_delta(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        function = call.get("function") or {}
        if call.get("index", 0) not in self._calls:
            item = self._envelope.call_item(
                call.get("id") or new_id("call_"), {**function, "arguments": ""}, "in_progress"
            )
            self._calls[call.get("index", 0)] = item
            out += self._open_item(item)
        if function.get("arguments"):
            self._text += function["arguments"]
            if self._open is not None and self._open["type"] == "function_call":
                delta = function["arguments"]
                out.append(self._emit("response.function_call_arguments.delta", item_id=self._open_id(), delta=delta))
        return out

    def end(self) -> list[bytes]:
        out = self._start() + self._close_item()
        usage = self._usage
        response = self._envelope.response(self._output, self._finish, usage)
        self._notes[FINAL] = response
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        out.append(self._emit(kind, response=response))
        return out

    def error_frame(self, error: ProxyError) -> bytes:
        response = self._envelope.response(self._output, None, self._usage, status="failed")
        response["error"] = {"code": error.code or "server_error", "message": error.message}
        return self._emit("response.failed", response=response)

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        response = self._envelope.response([], None, {}, status="in_progress")
        return [
            self._emit("response.created", response=response),
            self._emit("response.in_progress", response=response),
        ]

    def _open_item(self, item: dict[str, Any]) -> list[bytes]:
        out = self._close_item()
        self._open = item
        self._text = ""
        return [*out, self._emit("response.output_item.added", output_index=len(self._output), item=item)]

    def _close_item(self) -> list[bytes]:
        item = self._open
        if item is None:
            return []
        index = len(self._output)
        out: list[bytes] = []
        text = {"item_id": item["id"], "output_index": index, "content_index": 0}
        if item["type"] == "message":
            part = {"type": "output_text", "text": self._text, "annotations": [], "logprobs": []}
            out.append(self._emit("response.output_text.done", **text, text=self._text, logprobs=[]))
            out.append(self._emit("response.content_part.done", **text, part=part))
            item = _message_item(item["id"], self._text)
        elif item["type"] == "reasoning":
            out.append(self._emit("response.reasoning_text.done", **text, text=self._text))
            item = self._envelope.reasoning_item(item["id"], self._text)
        elif item["type"] == "custom_tool_call":
            # Its input, read from the one-string function it was offered as, once it is whole.
            done = {"item_id": item["id"], "output_index": index}
            item = {**item, "status": "completed", "input": _input_of(self._text)}
            out.append(self._emit("response.custom_tool_call_input.delta", **done, delta=item["input"]))
            out.append(self._emit("response.custom_tool_call_input.done", **done, input=item["input"]))
        else:
            item = {**item, "status": "completed", "arguments": self._text}
            done = {"item_id": item["id"], "output_index": index, "arguments": self._text}
            out.append(self._emit("response.function_call_arguments.done", **done))
        out.append(self._emit("response.output_item.done", output_index=index, item=item))
        self._output.append(item)
        self._open = None
        return out

    def _open_id(self) -> str:
        assert self._open is not None
        return str(self._open["id"])

    def _emit(self, kind: str, **fields: Any) -> bytes:
        if "output_index" not in fields and kind.startswith(
            ("response.output_text", "response.content_part", "response.function_call", "response.reasoning_text")
        ):
            fields["output_index"] = len(self._output)
        self._sequence += 1
        return named_event(kind, {"type": kind, "sequence_number": self._sequence - 1, **fields})
