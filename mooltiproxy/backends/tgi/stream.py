"""TGI /generate_stream events -> OpenAI server-sent chunks, releasing text as tokens arrive.

Only what a partial stop-string match needs is held back; the text from a stop string on is never
sent, also when it arrives split across tokens.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from mooltiproxy.backends.tgi.answer import FINISH_REASONS, usage
from mooltiproxy.config.plugin_specs import StreamTranslator
from mooltiproxy.core.accelerators import dumps
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.ids import new_id
from mooltiproxy.parsers.reasoning.base import ReasoningStream
from mooltiproxy.parsers.tools import TOOL_PARSERS
from mooltiproxy.translation.refusals import refusal_status
from mooltiproxy.translation.sse import json_event
from mooltiproxy.translation.stops import StopFilter

# TGI's error_type -> the HTTP status TGI would have answered outside a stream.
ERROR_STATUSES = {"validation": 422, "generation": 424, "overloaded": 429, "incomplete_generation": 500}


def event_error(event: dict) -> ProxyError | None:
    if not isinstance(event.get("error"), str):
        return None
    error_type = event.get("error_type")
    if not isinstance(error_type, str):
        return ProxyError(500, event["error"])
    return ProxyError(refusal_status(ERROR_STATUSES.get(error_type, 500)), event["error"], code=error_type)


class TGIStreamTranslator(StreamTranslator):
    """One stream's state. `kind` is 'chat' (chat.completion.chunk) or 'text' (text_completion)."""

    def __init__(
        self,
        kind: str,
        model: str,
        stops: Sequence[str],
        include_usage: bool,
        prefix: str = "",
        tool_parser: str | None = None,
        tools: Sequence[Any] = (),
        one_call: bool = False,
        reasoning: ReasoningStream | None = None,
        kept_specials: frozenset[str] = frozenset(),
    ):
        self._chat = kind == "chat"
        self._object = "chat.completion.chunk" if self._chat else "text_completion"
        self._id = new_id("chatcmpl-" if self._chat else "cmpl-")
        self._created = int(time.time())
        self._model = model
        self._filter = StopFilter(stops)
        self._include_usage = include_usage
        self._prefix = prefix
        self._started = False
        self._finish_reason: str | None = None
        # The model's reasoning, told from its answer before any tool call is looked for.
        self._reasoning = reasoning
        # Tool calls read from the text as it streams (chat only, when the request has tools).
        parser = TOOL_PARSERS[tool_parser] if tool_parser and self._chat else None
        self._tools = parser.stream(tools) if parser is not None else None
        # Special tokens are left out of the answer, but for the markers its parsers read.
        self._kept_specials = kept_specials
        self._calls = 0
        self._one_call = one_call  # parallel_tool_calls: false, so calls after the first are dropped
        # A delta's event as bytes around its JSON-escaped text, by field: made once per stream.
        self._frames: dict[str, tuple[bytes, bytes]] = {}

    def event(self, data: str) -> list[Any]:
        """The chunks for one upstream event; an error event raises its ProxyError."""
        event = json_event(data)
        if "error" in event:
            error = event_error(event)
            if error is not None:
                raise error
        chunks = [] if self._started else self._opening()
        token, text = event.get("token"), ""
        if isinstance(token, dict):
            text = token.get("text", "")
            if not isinstance(text, str):
                text = str(text)
            if text and token.get("special") and text not in self._kept_specials:
                text = ""
        released = self._filter.feed(text)
        if self._reasoning is None and self._tools is None:  # the usual case, one token's text at a time
            if released:
                chunks.append(self._delta("content", released) if self._chat else self._chunk(released))
        else:
            chunks += self._release(released)
        details = event.get("details")
        if details is not None and isinstance(details, dict):
            self._finish_reason = FINISH_REASONS.get(str(details.get("finish_reason")), "stop")
            self.usage = usage(int(details.get("input_length") or 0), int(details.get("generated_tokens") or 0))
        ended = event.get("generated_text") is not None
        # Nothing more to read once TGI's last event came, or a stop string ended the text (but
        # for the usage, which only the last event says).
        stopped = self._filter.stopped
        self.complete = ended or stopped
        self.finished = ended or (stopped and not self._include_usage)
        return chunks

    def _opening(self) -> list[Any]:
        self._started = True
        if self._chat:
            return [self._chunk({"role": "assistant", "content": ""})]
        return [self._chunk(self._prefix)] if self._prefix else []

    def _release(self, text: str) -> list[Any]:
        """The chunks of released text: reasoning, content, and tool calls as OpenAI streams them
        (the call with its name first, then its arguments)."""
        if self._reasoning is None:
            return self._answer(text)
        return self._reasoned(*self._reasoning.feed(text))

    def _reasoned(self, reasoning: str, text: str) -> list[Any]:
        chunks = [self._delta("reasoning_content", reasoning)] if reasoning else []
        return chunks + self._answer(text)

    def _answer(self, text: str) -> list[Any]:
        if self._tools is None:
            return [self._delta("content", text) if self._chat else self._chunk(text)] if text else []
        return self._tool_chunks(*self._tools.feed(text))

    def _delta(self, field: str, text: str) -> Any:
        """A chunk of text, the stream's most frequent event: when no link follows, framed here as
        bytes, the envelope serialised once per stream and only the text escaped for each token."""
        if not self.last:
            return self._chunk({field: text})
        frame = self._frames.get(field)
        if frame is None:
            head = b"data: " + dumps(self._chunk({field: ""})) + b"\n\n"
            before, after = head.split(b'"%s":""' % field.encode(), 1)
            frame = self._frames[field] = (before + b'"%s":' % field.encode(), after)
        return frame[0] + dumps(text) + frame[1]

    def _tool_chunks(self, content: str, calls: list[dict[str, Any]]) -> list[Any]:
        chunks = [self._delta("content", content)] if content else []
        if self._one_call:
            calls = calls[: max(0, 1 - self._calls)]
        for call in calls:
            index, self._calls = self._calls, self._calls + 1
            function = call["function"]
            opening = {**call, "index": index, "function": {"name": function["name"], "arguments": ""}}
            chunks.append(self._chunk({"tool_calls": [opening]}))
            chunks.append(
                self._chunk({"tool_calls": [{"index": index, "function": {"arguments": function["arguments"]}}]})
            )
        return chunks

    def end(self) -> list[Any]:
        chunks = self._release(self._filter.flush())
        if self._reasoning is not None:
            chunks += self._reasoned(*self._reasoning.flush())
        if self._tools is not None:
            chunks += self._tool_chunks(*self._tools.flush())
        finish_reason = "stop" if self._filter.stopped else self._finish_reason or "stop"
        if self._calls:
            finish_reason = "tool_calls"
        chunks.append(self._chunk({} if self._chat else "", finish_reason))
        if self._include_usage:
            chunks.append({**self._envelope([]), "usage": self.usage or usage(0, 0)})
        return chunks

    def _chunk(self, delta: Any, finish_reason: str | None = None) -> dict[str, Any]:
        if self._chat:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"text": delta, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope([choice])

    def _envelope(self, choices: list) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": self._object,
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
