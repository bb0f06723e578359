"""The tool-calling routes and clients several e2e modules use: a Qwen 2.5 template behind each
front, and the OpenAI client's calls read back whole or streamed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openai import OpenAI

from conftest import KEY, WEATHER, ProxyProcess, proxy_config
from support.models import QWEN, model_folder
from support.routes import fronts_onto_tgi

COMMON = {"path": "/generate", "prompter": "chat_template", "template": "Qwen", "tool_parser": "hermes"}


ROUTES = {
    **fronts_onto_tgi(**COMMON),
    "/no-tools/chat/completions": {
        **COMMON,
        "template": "llama3",
        "in": "chatReqOpenAItoTGI",
        "out": "chatAnsTGItoOpenAI",
    },
}


ANTHROPIC_WEATHER = {
    "name": "get_weather",
    "description": "The weather",
    "input_schema": WEATHER["function"]["parameters"],
}


def template_proxy(
    start_proxy: Any, fake_tgi: Any, tmp_path: Path, template: Path, routes: dict, name: str, **tokens: str
) -> ProxyProcess:
    """The proxy with `routes` onto the fake TGI, a model folder with `template` named `name`."""
    folder = model_folder(tmp_path, template, **tokens)
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": routes}}, templates={name: {"tokenizer_config": folder}}
    )
    return start_proxy(config)


def qwen_proxy(start_proxy: Any, fake_tgi: Any, tmp_path: Path) -> ProxyProcess:
    """The proxy with ROUTES onto the fake TGI, Qwen 2.5's own template rendering the tools."""
    return template_proxy(start_proxy, fake_tgi, tmp_path, QWEN, ROUTES, "Qwen", eos_token="<|im_end|>")


def openai_client(proxy) -> OpenAI:
    return OpenAI(base_url=f"{proxy.url}/v1", api_key=KEY, max_retries=0, _strict_response_validation=True)


def ask_openai(proxy, messages: list, stream: bool, **extra) -> tuple[str | None, list, str]:
    """(content, [(id, name, arguments)], finish_reason) of a chat request, streamed or not."""
    kwargs = {"model": "m", "messages": messages, "tools": [WEATHER], **extra}
    if not stream:
        choice = openai_client(proxy).chat.completions.create(**kwargs).choices[0]
        calls = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []]
        return choice.message.content, calls, choice.finish_reason
    chunks = list(openai_client(proxy).chat.completions.create(**kwargs, stream=True))
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) or None
    deltas = [call for chunk in chunks if chunk.choices for call in (chunk.choices[0].delta.tool_calls or [])]
    names = {delta.index: (delta.id, delta.function.name) for delta in deltas if delta.id}
    arguments = {index: "" for index in names}
    for delta in deltas:
        arguments[delta.index] += delta.function.arguments or ""
    calls = [(*names[index], json.loads(arguments[index])) for index in sorted(names)]
    return content, calls, chunks[-1].choices[0].finish_reason


def with_tool_result(messages: list, use: Any, result: str) -> list:
    """An Anthropic conversation after the assistant's tool_use block, answered `result`."""
    return [
        *messages,
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": result}]},
    ]


def with_results(messages: list, calls: list, result: str) -> list:
    """The conversation after the assistant's calls ([(id, name, arguments)]), each answered `result`."""
    tool_calls = [
        {"id": id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        for id, name, arguments in calls
    ]
    return [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": tool_calls},
        *({"role": "tool", "tool_call_id": id, "content": result} for id, _, _ in calls),
    ]
