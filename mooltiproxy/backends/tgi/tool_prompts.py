"""What a model is told of tools beyond its chat template: the tool prompt of grammar mode, and a
history written for a template that knows no tools."""

from __future__ import annotations

import json
from typing import Any

from mooltiproxy.backends.tgi.grammar import NO_TOOL
from mooltiproxy.translation.prompting import message_content, parsed_arguments


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
