"""Where the text guards read lives in the payloads they see: OpenAI Chat, the pivot every chat
front maps to and every chat backend maps from, and TGI's own /generate on pass-through routes.
A view also writes the answer a block gives when it answers as the assistant."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from mooltiproxy.core.accelerators import dumps
from mooltiproxy.core.errors import ProxyError, error_body
from mooltiproxy.core.events import json_event
from mooltiproxy.core.ids import new_id

# holder[key] is a text: a message, a part, a delta, a token.
Place = tuple[Any, Any]
# A streamed text, told from the others: (choice, field) or (choice, "tool", call index).
Slot = tuple[Any, ...]

_USER_CONTROLLED = ("user", "tool", "function")


def _list(value: Any) -> list[Any]:
    """A list a payload holds, or none: a client's `"tool_calls": 5` is skipped, not a crash."""
    return value if isinstance(value, list) else []


class View:
    """The pivot's: OpenAI Chat Completions requests, answers and chunks."""

    name = "openai.chat"
    done = b"data: [DONE]\n\n"
    droppable = frozenset({"content", "reasoning_content"})  # a delta's fields left out when emptied

    # ---- requests ----
    def request_places(self, payload: dict) -> Iterator[tuple[Place, str]]:
        """Every text the model will read, with its message's role."""
        for message in _list(payload.get("messages")):
            if not isinstance(message, dict):
                continue
            role = str(message.get("role"))
            content = message.get("content")
            if isinstance(content, str):
                yield (message, "content"), role
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        yield (part, "text"), role
            for call in _list(message.get("tool_calls")):
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    yield (function, "arguments"), role

    def user_texts(self, payload: dict) -> list[str]:
        """What a classifier reads: the user's turns and tool results, never the system prompt."""
        return [holder[key] for (holder, key), role in self.request_places(payload) if role in _USER_CONTROLLED]

    def streams(self, payload: dict, stream_route: bool) -> bool:
        return payload.get("stream") is True

    def counts_usage(self, payload: dict) -> bool:
        options = payload.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    # ---- answers ----
    def answer_places(self, payload: Any) -> Iterator[Place]:
        for choice in _list(payload.get("choices")) if isinstance(payload, dict) else ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                yield from ((holder, key) for holder, key, _ in self._texts_of(message))

    def answer_with(self, payload: dict, message: str) -> None:
        """The answer becomes the message, as the assistant's whole reply."""
        for choice in _list(payload.get("choices")):
            if not isinstance(choice, dict):
                continue
            choice["message"] = {"role": "assistant", "content": message}
            choice["finish_reason"] = "stop"
        self.scrub(payload)

    def scrub(self, payload: dict) -> None:
        """What else tells the text a guard changed, removed: the tokens' logprobs."""
        for choice in _list(payload.get("choices")):
            if isinstance(choice, dict) and choice.get("logprobs") is not None:
                choice["logprobs"] = None

    def blocked_answer(self, message: str, model: str) -> dict[str, Any]:
        return {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": message},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    def blocked_events(self, message: str, model: str, counts_usage: bool) -> list[dict[str, Any]]:
        envelope = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            return {
                **envelope,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }

        chunks = [chunk({"role": "assistant", "content": message}, None), chunk({}, "stop")]
        if counts_usage:
            chunks.append(
                {**envelope, "choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
            )
        return chunks

    # ---- streams ----
    def chunk_places(self, chunk: dict) -> Iterator[tuple[Slot, Place]]:
        for choice in _list(chunk.get("choices")):
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                index = choice.get("index", 0)
                for holder, key, call in self._texts_of(delta):
                    yield ((index, key) if call is None else (index, "tool", call)), (holder, key)

    def whole_places(self, chunk: dict) -> Iterator[Place]:
        return iter(())

    def ended(self, chunk: dict) -> list[Any]:
        """The choices this chunk ends."""
        return [
            choice.get("index", 0)
            for choice in _list(chunk.get("choices"))
            if isinstance(choice, dict) and choice.get("finish_reason")
        ]

    def add_text(self, chunk: dict, slot: Slot, text: str) -> bool:
        """Text held back of a slot, added after the text of a chunk of the same choice."""
        choice = next(choice for choice in chunk["choices"] if choice.get("index", 0) == slot[0])
        delta = choice.setdefault("delta", {})
        if slot[1] == "tool":
            calls = delta.setdefault("tool_calls", [])
            call = next((call for call in calls if call.get("index") == slot[2]), None)
            if call is None:
                calls.append({"index": slot[2], "function": {"arguments": text}})
            else:
                function = call.setdefault("function", {})
                function["arguments"] = (function.get("arguments") or "") + text
        else:
            delta[slot[1]] = (delta.get(slot[1]) or "") + text
        return True

    def text_chunk(self, like: dict, slot: Slot) -> dict[str, Any] | None:
        """An empty chunk of the slot's choice, with the envelope of another, for held text."""
        envelope = {key: value for key, value in like.items() if key not in ("choices", "usage")}
        return {**envelope, "choices": [{"index": slot[0], "delta": {}, "logprobs": None, "finish_reason": None}]}

    def empty(self, chunk: dict) -> bool:
        """A chunk left with nothing to say once its text was held back."""
        choices = _list(chunk.get("choices"))
        return (
            bool(choices)
            and "usage" not in chunk
            and all(
                isinstance(choice, dict) and not choice.get("delta") and choice.get("finish_reason") is None
                for choice in choices
            )
        )

    # ---- a pass-through route's own stream ----
    def decode(self, data: str) -> dict[str, Any] | None:
        """An upstream event; None for the stream's end ([DONE])."""
        if data == "[DONE]":
            return None
        return json_event(data)

    def ends(self, event: dict) -> bool:
        return False

    def usage_of(self, event: dict) -> dict[str, Any] | None:
        usage = event.get("usage")
        return usage if isinstance(usage, dict) and "prompt_tokens" in usage else None

    def error_frame(self, error: ProxyError) -> bytes:
        return b"data: " + error_body(error.status, error.message, error.code) + b"\n\n"

    @staticmethod
    def _texts_of(message: dict) -> Iterator[tuple[Any, str, Any]]:
        """A message's or a delta's texts: (holder, key, the tool call's index or None)."""
        for key in ("reasoning_content", "content"):
            if isinstance(message.get(key), str) and message[key]:
                yield message, key, None
        for position, call in enumerate(_list(message.get("tool_calls"))):
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str) and function["arguments"]:
                yield function, "arguments", call.get("index", position)


class TGIView(View):
    """TGI's own /generate and /generate_stream (router/src/lib.rs: GenerateRequest,
    GenerateResponse, StreamResponse), on routes that pass them through."""

    name = "tgi.generate"
    done = b""  # TGI's stream ends with its last event, no [DONE]
    droppable = frozenset()  # a token's text is kept, emptied: clients count tokens

    def request_places(self, payload: dict) -> Iterator[tuple[Place, str]]:
        if isinstance(payload.get("inputs"), str):
            yield (payload, "inputs"), "user"  # the whole prompt, written by the client

    def streams(self, payload: dict, stream_route: bool) -> bool:
        return stream_route

    def counts_usage(self, payload: dict) -> bool:
        return False

    def answer_places(self, payload: Any) -> Iterator[Place]:
        if isinstance(payload, dict) and isinstance(payload.get("generated_text"), str):
            yield payload, "generated_text"
            details = payload.get("details")
            sequences = details.get("best_of_sequences") if isinstance(details, dict) else None
            for sequence in _list(sequences):
                if isinstance(sequence, dict) and isinstance(sequence.get("generated_text"), str):
                    yield sequence, "generated_text"

    def answer_with(self, payload: dict, message: str) -> None:
        for holder, key in list(self.answer_places(payload)):
            holder[key] = message
        self.scrub(payload)

    def scrub(self, payload: dict) -> None:
        """The tokens' ids and texts tell what a guard changed: an event's token keeps its (changed)
        text only, and an answer's details keep their counts, not their tokens."""
        token = payload.get("token")
        if isinstance(token, dict):
            token["id"], token["logprob"] = 0, 0.0
            payload["top_tokens"] = None
        details = payload.get("details")
        for holder in [details, *_list(details.get("best_of_sequences"))] if isinstance(details, dict) else ():
            if isinstance(holder, dict):
                for key in ("prefill", "tokens", "top_tokens"):
                    if holder.get(key):
                        holder[key] = []

    def blocked_answer(self, message: str, model: str) -> dict[str, Any]:
        return {"generated_text": message}

    def blocked_events(self, message: str, model: str, counts_usage: bool) -> list[dict[str, Any]]:
        token = {"id": 0, "text": message, "logprob": 0.0, "special": False}
        return [{"index": 1, "token": token, "top_tokens": None, "generated_text": message, "details": None}]

    def chunk_places(self, chunk: dict) -> Iterator[tuple[Slot, Place]]:
        token = chunk.get("token")
        if isinstance(token, dict) and not token.get("special") and isinstance(token.get("text"), str):
            yield (0, "text"), (token, "text")

    def whole_places(self, chunk: dict) -> Iterator[Place]:
        if isinstance(chunk.get("generated_text"), str):
            yield chunk, "generated_text"

    def ended(self, chunk: dict) -> list[Any]:
        return [0] if chunk.get("generated_text") is not None else []

    def add_text(self, chunk: dict, slot: Slot, text: str) -> bool:
        token = chunk.get("token")
        if not isinstance(token, dict) or token.get("special"):
            return False  # a special token's text is not the answer's: the text goes before it
        token["text"] = (token.get("text") or "") + text
        return True

    def text_chunk(self, like: dict, slot: Slot) -> dict[str, Any] | None:
        token = {"id": 0, "text": "", "logprob": 0.0, "special": False}
        return {
            "index": like.get("index", 0),
            "token": token,
            "top_tokens": None,
            "generated_text": None,
            "details": None,
        }

    def empty(self, chunk: dict) -> bool:
        return False

    def decode(self, data: str) -> dict[str, Any] | None:
        return json_event(data)

    def ends(self, event: dict) -> bool:
        return event.get("generated_text") is not None or "error" in event

    def usage_of(self, event: dict) -> dict[str, Any] | None:
        details = event.get("details")
        if not isinstance(details, dict):
            return None
        prompt, generated = details.get("input_length") or 0, details.get("generated_tokens") or 0
        return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}

    def error_frame(self, error: ProxyError) -> bytes:
        # TGI's stream error event (router/src/server.rs: ErrorResponse in an SSE event).
        return b"data: " + dumps({"error": error.message, "error_type": error.code or "error"}) + b"\n\n"


PIVOT_VIEW = View()
TGI_VIEW = TGIView()
