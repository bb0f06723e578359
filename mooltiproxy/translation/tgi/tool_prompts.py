"""What a model is told of tools beyond its chat template: the tool prompt of grammar mode, a history
written for a template that knows no tools, and Mistral's 9-character ids."""

from __future__ import annotations

import hashlib
import json
import string
from typing import Any

from mooltiproxy.translation.prompting import message_content, parsed_arguments
from mooltiproxy.translation.tgi.grammar import NO_TOOL

_ALPHANUMERIC = string.ascii_letters + string.digits


def without_tool_turns(messages: Any, tools: list[Any] | None) -> Any:
    """The conversation for a template that renders no tools (grammar mode): earlier calls written as
    the JSON the grammar had the model write, their results as a user turn (consecutive ones in one),
    and the tools, when the request has some, described after the last message, as TGI's Messages
    API does."""
    if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
        return messages  # the prompter says what is wrong
    names: dict[str, str] = {}  # call id -> tool name
    turns: list[dict[str, Any]] = []
    results: list[str] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            call_id, name = message.get("tool_call_id"), message.get("name")
            if not isinstance(name, str) or not name:
                name = names.get(call_id, "the tool") if isinstance(call_id, str) else "the tool"
            results.append(f"{name} returned: {message_content(message, index)}")
            continue
        if results:
            turns.append({"role": "user", "content": "\n\n".join(results)})
            results = []
        calls = message.get("tool_calls")
        if role == "assistant" and isinstance(calls, list) and calls:
            written = [message_content(message, index)]
            for call in calls:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    if isinstance(call.get("id"), str) and isinstance(function.get("name"), str):
                        names[call["id"]] = function["name"]
                    written.append(json.dumps(_grammar_call(function), ensure_ascii=False))
            message = {"role": "assistant", "content": "\n".join(text for text in written if text)}
        turns.append(message)
    if results:
        turns.append({"role": "user", "content": "\n\n".join(results)})
    if tools and turns:
        last = turns[-1]
        turns[-1] = {**last, "content": message_content(last, len(turns) - 1) + tool_prompt(tools)}
    return turns


def _grammar_call(function: dict[str, Any]) -> dict[str, Any]:
    """An earlier call as the tool grammar had the model write it."""
    arguments = parsed_arguments(function.get("arguments"))
    return {"function": {"_name": function.get("name"), **(arguments if isinstance(arguments, dict) else {})}}


def tool_prompt(tools: list[Any]) -> str:
    """What a model whose template renders no tools is told of them, as TGI's Messages API does."""
    return (
        "\n\nYou will be presented with a JSON schema representing a set of tools. Answer with a JSON "
        'object {"function": {"_name": the tool to call, then its arguments}}, or {"function": {"_name": '
        f'"{NO_TOOL}", "content": your answer}}}} when no tool is needed.\n\nJSON Schema:\n' + json.dumps(tools)
    )


def mistral_id(client_id: str) -> str:
    """A 9-character id for a client's tool-call id, the only kind Mistral's templates take; the same
    id gives the same one, so a call and its result still match."""
    if len(client_id) == 9 and client_id.isascii() and client_id.isalnum():
        return client_id
    number = int.from_bytes(hashlib.sha256(client_id.encode()).digest()[:8])
    return "".join(_ALPHANUMERIC[number // 62**place % 62] for place in range(9))


def with_mistral_ids(messages: Any) -> Any:
    """The messages with every tool-call id (of calls and of results) made one Mistral takes."""
    if not isinstance(messages, list):
        return messages
    mapped = []
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
        mapped.append(message)
    return mapped
