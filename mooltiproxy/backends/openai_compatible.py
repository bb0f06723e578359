"""OpenAI Chat Completions <-> an OpenAI-compatible chat server: vLLM, SGLang, llama.cpp's server,
and TGI's own /v1/chat/completions. What such servers do differently is normalised to what OpenAI
clients expect: TGI answers a tool call with `finish_reason: "stop"` and the id "0", and never ends
a streamed tool call with a `finish_reason`; here each call gets a unique id, and the answer
`finish_reason: "tool_calls"` and a final chunk. A request whose max_tokens does not fit what the
prompt leaves of the context is sent once more with the room there is, and an error the server
sends inside a 200 stream (TGI does) is an error with its status, not a broken stream.

    /chat/completions:
      in: chatReqOpenAItoCompatible
      out: chatAnsCompatibleToOpenAI
    /messages/count_tokens:          # Anthropic's count, by the server's own chat tokenizer
      path: /tokenize                # vLLM's; /chat_tokenize on TGI
      in: [countReqAnthropicToOpenAI, tokenizeReqOpenAItoCompatible]
      out: countAnsCompatibleToAnthropic
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mooltiproxy.backends.base import Backend
from mooltiproxy.backends.tgi.backend import TGIBackend
from mooltiproxy.config.plugin_specs import StreamTranslator
from mooltiproxy.config.settings import Endpoint, TargetInfo
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.ids import new_id
from mooltiproxy.core.mapping import Note, Streamed
from mooltiproxy.serving.context import MapperContext
from mooltiproxy.translation.context_window import with_room
from mooltiproxy.translation.images import with_images_ready
from mooltiproxy.translation.kinds import ANTHROPIC_COUNT, COMPATIBLE_TOKENIZE, OPENAI_CHAT, OPENAI_COMPATIBLE
from mooltiproxy.translation.marks import mapper
from mooltiproxy.translation.refusals import refusal_status
from mooltiproxy.translation.sse import json_event
from mooltiproxy.translation.stops import StopFilter, cut_at_stop

log = logging.getLogger("mooltiproxy.translation")


class CompatibleBackend(Backend):
    """An OpenAI-compatible server: its /v1/models says the model, and vLLM's and SGLang's
    `max_model_len` or llama.cpp's `meta.n_ctx_train` its context."""

    name = "openai_compatible"
    info_path = "/v1/models"

    @staticmethod
    def read_info(body: Any) -> TargetInfo | None:
        model = body["data"][0]
        length = model.get("max_model_len") or (model.get("meta") or {}).get("n_ctx_train")
        model_id = model.get("id")
        return TargetInfo(
            model_id=model_id if isinstance(model_id, str) else None,
            context_length=length if isinstance(length, int) else None,
            source=CompatibleBackend.info_path,
        )


_WANTS_USAGE = Note[bool]("compatible.wants_usage")
_OWN_STOPS = Note[Sequence[str]]("compatible.own_stops")  # the stop strings beyond the server's limit, enforced here


@mapper(OPENAI_CHAT, OPENAI_COMPATIBLE)
def chatReqOpenAItoCompatible(payload: dict, endpoint: Endpoint, context: MapperContext) -> Any:
    """The request as it is, tools and all; a stream always asks for its usage (token limits and
    the Anthropic front need it), which is passed on only to a client that asked. Stop strings
    beyond what the server takes (TGI's max_stop_sequences, from its /info) are enforced here."""
    request = dict(payload)
    if "messages" in payload:
        request["messages"] = with_images_ready(payload["messages"], endpoint, context)
    if context.target_info.source == TGIBackend.info_path:
        _within_tgis_ranges(request)
    stop, limit = payload.get("stop"), context.target_info.max_stop_sequences
    if isinstance(stop, list) and limit is not None and len(stop) > limit:
        request["stop"], context.notes[_OWN_STOPS] = stop[:limit], stop[limit:]
        name = context.target.name if context.target is not None else "-"
        log.info("target %s takes %d stop sequences: the proxy enforces the other %d", name, limit, len(stop) - limit)
    if payload.get("stream") is not True:
        return request
    options = payload.get("stream_options")
    context.notes[_WANTS_USAGE] = isinstance(options, dict) and options.get("include_usage") is True
    request["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return Streamed(request)


def _within_tgis_ranges(request: dict[str, Any]) -> None:
    """TGI's chat API (a target whose /info said so) refuses top_p outside (0, 1), which OpenAI
    clients may send: 1 means no nucleus filtering, as leaving it out does, and 0 greedy decoding,
    which TGI reads from temperature 0 (router/src/lib.rs, ChatRequest::try_into_generate)."""
    top_p = request.get("top_p")
    if isinstance(top_p, int | float) and not isinstance(top_p, bool) and not 0 < top_p < 1:
        del request["top_p"]
        if top_p <= 0:
            request["temperature"] = 0


def _stream(endpoint: Endpoint, context: MapperContext) -> CompatibleStream:
    return CompatibleStream(bool(context.notes.get(_WANTS_USAGE)), context.notes.get(_OWN_STOPS, ()))


def _context_window(error: ProxyError, sent: dict, context: MapperContext) -> dict | None:
    """The server's refusal of a max_tokens the prompt leaves no room for (TGI's and vLLM's words):
    sent once more with the room there is."""
    return with_room(error, sent, _with_max_tokens)


def _with_max_tokens(sent: dict, room: int) -> dict:
    clamped = type(sent)({name: value for name, value in sent.items() if name != "max_completion_tokens"})
    clamped["max_tokens"] = room
    return clamped


@mapper(OPENAI_COMPATIBLE, OPENAI_CHAT, streams_with=_stream, on_upstream_error=_context_window)
def chatAnsCompatibleToOpenAI(payload: Any, endpoint: Endpoint, context: MapperContext) -> Any:
    if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list):
        raise ProxyError(502, "The target's answer is not a chat completion", code="upstream_error")
    payload["id"] = payload.get("id") or new_id("chatcmpl-")
    own_stops = context.notes.get(_OWN_STOPS, ())
    for choice in payload["choices"]:
        message = choice.get("message") if isinstance(choice, dict) else None
        if own_stops and isinstance(message, dict) and isinstance(message.get("content"), str):
            message["content"], stopped = cut_at_stop(message["content"], own_stops)
            if stopped:
                choice["finish_reason"] = "stop"
        if isinstance(message, dict) and message.get("tool_calls"):
            for call in message["tool_calls"]:
                call["id"] = new_id("call_")
            message.setdefault("content", None)
            choice["finish_reason"] = "tool_calls"
    return payload


class CompatibleStream(StreamTranslator):
    """The server's chunks, normalised: a unique id for each tool call (sent once, as OpenAI does),
    a final chunk with a finish_reason when the server sent none, then the usage for a client that
    asked for it. Text stops at the first of `own_stops` (those the server does not take)."""

    def __init__(self, wants_usage: bool, own_stops: Sequence[str] = ()):
        self.finished = False
        self.complete = False
        self.usage: dict[str, Any] | None = None
        self._wants_usage = wants_usage
        self._usage_chunk: dict[str, Any] | None = None
        self._finished_choice = False
        self._calls: dict[int, str] = {}
        self._id = new_id("chatcmpl-")
        self._last: dict[str, Any] = {}
        self._stops = StopFilter(own_stops) if own_stops else None

    def event(self, data: str) -> list[Any]:
        if data.strip() == "[DONE]":
            self.finished = self.complete = True
            return []
        chunk = json_event(data)
        if "error" in chunk:
            raise _event_error(chunk["error"])
        chunk["id"] = chunk.get("id") or self._id
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        if not chunk.get("choices"):
            if isinstance(usage, dict):
                self._usage_chunk = chunk  # sent after the final chunk, as OpenAI orders them
            return []
        chunk.pop("usage", None)
        for choice in chunk["choices"]:
            self._normalise(choice)
        self._last = chunk
        if self._stops is not None and self._stops.stopped:  # the answer ends here, as the server would end it
            self.finished = self.complete = self._finished_choice = True
            chunk["choices"][0]["finish_reason"] = "stop"
        return [chunk]

    def _normalise(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        for call in delta.get("tool_calls") or []:
            index = call.get("index", 0)
            function = call.get("function") or {}
            if function.get("name") is None:
                function.pop("name", None)
            if index in self._calls:
                call.pop("id", None)
                call.pop("type", None)
            else:
                self._calls[index] = call["id"] = new_id("call_")
                call["type"] = "function"
        if self._stops is not None and isinstance(delta.get("content"), str):
            delta["content"] = self._stops.feed(delta["content"])
        if choice.get("finish_reason"):
            self._finished_choice = True
            if self._stops is not None:
                delta["content"] = (delta.get("content") or "") + self._stops.flush()
            if self._calls:
                choice["finish_reason"] = "tool_calls"

    def end(self) -> list[Any]:
        out: list[Any] = []
        if not self._finished_choice:
            finish = "tool_calls" if self._calls else "stop"
            held = self._stops.flush() if self._stops is not None else ""
            choice = {"index": 0, "delta": {"content": held} if held else {}, "logprobs": None, "finish_reason": finish}
            out.append({**self._last, "id": self._last.get("id", self._id), "choices": [choice]})
        if self._wants_usage and self._usage_chunk is not None:
            out.append(self._usage_chunk)
        return out


def _event_error(error: Any) -> ProxyError:
    """An error event in the stream: TGI's `{"message", "http_status_code"}` (the status it would have
    answered), vLLM's and OpenAI's `{"message", "type", "code"}`, or a bare string."""
    if not isinstance(error, dict):
        return ProxyError(502, str(error), code="upstream_error")
    status = error.get("http_status_code") or error.get("code")
    status = status if isinstance(status, int) and 400 <= status < 600 else 502
    return ProxyError(
        refusal_status(status), str(error.get("message", "")), code="upstream_error" if status >= 500 else None
    )


@mapper(OPENAI_CHAT, COMPATIBLE_TOKENIZE)
def tokenizeReqOpenAItoCompatible(payload: dict, endpoint: Endpoint, context: MapperContext) -> dict[str, Any]:
    """An OpenAI chat request -> the server's chat tokenizer (vLLM's /tokenize, TGI's /chat_tokenize),
    which renders it as /v1/chat/completions would, tools included."""
    request = {name: payload[name] for name in ("model", "messages", "tools", "tool_choice") if name in payload}
    return {**request, "add_generation_prompt": True}


@mapper(COMPATIBLE_TOKENIZE, ANTHROPIC_COUNT)
def countAnsCompatibleToAnthropic(payload: Any, endpoint: Endpoint, context: MapperContext) -> dict[str, Any]:
    """vLLM's `{"count", "tokens", "max_model_len"}` or TGI's `{"tokenize_response": [...]}` -> Anthropic's
    count."""
    count = payload.get("count") if isinstance(payload, dict) else None
    tokens = payload.get("tokenize_response") if isinstance(payload, dict) else None
    if isinstance(count, int):
        return {"input_tokens": count}
    if isinstance(tokens, list):
        return {"input_tokens": len(tokens)}
    raise ProxyError(502, "The target's tokenizer answer has no token count", code="upstream_error")
