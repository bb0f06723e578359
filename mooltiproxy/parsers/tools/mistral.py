"""Mistral 7B v0.3, Nemo, Small 3.x, Devstral: the calls follow `[TOOL_CALLS]`, as a JSON list
`[{"name": ..., "arguments": {...}}]` in older models, as `name[ARGS]{...}` after each
`[TOOL_CALLS]` in newer ones (with `[CALL_ID]id` in some). The text before is content. A call runs to
the next marker or to the end of the answer: in a stream, each is sent once the next begins. Its
templates take only 9-character alphanumeric call ids."""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from typing import Any

from mooltiproxy.parsers.tools.base import NOT_JSON, Calls, MarkedParser, call_of, json_value


class MistralParser(MarkedParser):
    name = "mistral"
    special_tokens = frozenset({"[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"})
    opening = "[TOOL_CALLS]"

    def detect(self, template_source: str) -> bool:
        return self.opening in template_source

    def prepare_messages(self, messages: Any) -> Any:
        """The messages with every tool-call id (of calls and of results) made one Mistral takes."""
        if not isinstance(messages, list):
            return messages
        prepared = []
        for message in messages:
            if isinstance(message, dict):
                message = dict(message)
                if isinstance(message.get("tool_call_id"), str):
                    message["tool_call_id"] = mistral_id(message["tool_call_id"])
                if isinstance(message.get("tool_calls"), list):
                    message["tool_calls"] = [
                        {**call, "id": mistral_id(call["id"])}
                        if isinstance(call, dict) and isinstance(call.get("id"), str)
                        else call
                        for call in message["tool_calls"]
                    ]
            prepared.append(message)
        return prepared

    def parse(self, text: str, tools: Sequence[Any] = ()) -> tuple[str | None, Calls]:
        content, *segments = text.split(self.opening)
        kept, calls = [content], []
        for segment in segments:
            found = self.calls_in(segment, tools)
            if found is None:
                kept.append(self.opening + segment)  # malformed: it stays text
            else:
                calls += found
        return ("".join(kept).strip() or None, calls) if calls else (text, [])

    def calls_in(self, source: str, tools: Sequence[Any]) -> Calls | None:
        body = source.strip()
        if body.startswith(("[", "{")):  # older models: a JSON list of calls
            value = json_value(body, whole=False)
            found = [call_of(item) for item in (value if isinstance(value, list) else [value])]
            calls = [call for call in found if call is not None]
            return calls if calls and len(calls) == len(found) else None
        name, separator, arguments = source.partition("[ARGS]")  # newer ones: name[ARGS]{...}
        if not separator:  # without the [ARGS] token's text, the arguments start at the first brace
            brace = source.find("{")
            name, arguments = (source[:brace], source[brace:]) if brace > 0 else (source, "")
        name = name.partition("[CALL_ID]")[0].strip()
        value = json_value(arguments)
        call = call_of({"name": name, "arguments": value}) if name and value is not NOT_JSON else None
        return [call] if call is not None else None


_ALPHANUMERIC = string.ascii_letters + string.digits


def mistral_id(client_id: str) -> str:
    """A 9-character id for a client's tool-call id, the only kind Mistral's templates take; the same
    id gives the same one, so a call and its result still match."""
    if len(client_id) == 9 and client_id.isascii() and client_id.isalnum():
        return client_id
    number = int.from_bytes(hashlib.sha256(client_id.encode()).digest()[:8])
    return "".join(_ALPHANUMERIC[number // 62**place % 62] for place in range(9))
