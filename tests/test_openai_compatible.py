"""An OpenAI-compatible chat server as the target (the fake TGI's /v1/chat/completions, which answers
as TGI does): OpenAI clients and the Anthropic front, text and tools, streamed and not."""

from __future__ import annotations

import json

import anthropic
import pytest
from openai import OpenAI

from conftest import ASK, KEY, WEATHER, proxy_config

CHAT_ROUTE = {"path": "/v1/chat/completions", "in": "chatReqOpenAItoCompatible", "out": "chatAnsCompatibleToOpenAI"}
MESSAGES_ROUTE = {
    "path": "/v1/chat/completions",
    "in": ["messagesReqAnthropicToOpenAI", "chatReqOpenAItoCompatible"],
    "out": ["chatAnsCompatibleToOpenAI", "messagesAnsOpenAIToAnthropic"],
}


@pytest.fixture
def proxy(start_proxy, fake_tgi):
    mapping = {"/chat/completions": CHAT_ROUTE, "/messages": MESSAGES_ROUTE}
    return start_proxy(proxy_config({"server": {"url": fake_tgi.url, "mapping": mapping}}))


def openai_client(proxy) -> OpenAI:
    return OpenAI(base_url=f"{proxy.url}/v1", api_key=KEY, max_retries=0, _strict_response_validation=True)


def anthropic_client(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0)


def test_text_streamed_and_not(proxy, fake_tgi):
    fake_tgi.reply = "Sunny and mild today."
    complete = openai_client(proxy).chat.completions.create(model="m", messages=ASK, max_tokens=20)
    assert complete.choices[0].message.content == "Sunny and mild today."
    assert complete.choices[0].finish_reason == "stop"
    chunks = list(
        openai_client(proxy).chat.completions.create(
            model="m", messages=ASK, max_tokens=20, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Sunny and mild today."
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].usage.total_tokens == complete.usage.total_tokens
    assert fake_tgi.last.path == "/v1/chat/completions"


def test_a_tool_call_is_normalised(proxy, fake_tgi):
    fake_tgi.tool_call = ("get_weather", {"city": "Paris"})
    answer = openai_client(proxy).chat.completions.create(model="m", messages=ASK, tools=[WEATHER])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"  # TGI says "stop"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.id != "0"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert fake_tgi.last.json()["tools"] == [WEATHER]


def test_a_streamed_tool_call_gets_its_id_once_and_a_final_chunk(proxy, fake_tgi):
    fake_tgi.tool_call = ("get_weather", {"city": "Paris"})
    chunks = list(openai_client(proxy).chat.completions.create(model="m", messages=ASK, tools=[WEATHER], stream=True))
    calls = [call for chunk in chunks for call in (chunk.choices[0].delta.tool_calls or [])]
    assert calls[0].id.startswith("call_") and calls[0].function.name == "get_weather"
    assert all(call.id is None for call in calls[1:])
    assert json.loads("".join(call.function.arguments or "" for call in calls)) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"  # TGI sends none


def test_anthropic_text_on_an_openai_compatible_target(proxy, fake_tgi):
    fake_tgi.reply = "Bonjour."
    message = anthropic_client(proxy).messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=ASK)
    with anthropic_client(proxy).messages.stream(model="claude-sonnet-4-5", max_tokens=16, messages=ASK) as stream:
        streamed = stream.get_final_message()
    assert message.content[0].text == streamed.content[0].text == "Bonjour."
    assert message.usage.output_tokens == streamed.usage.output_tokens > 0
    assert message.usage.input_tokens == streamed.usage.input_tokens > 0


def test_anthropic_tool_use_streamed_and_not(proxy, fake_tgi):
    fake_tgi.tool_call = ("get_weather", {"city": "Paris"})
    tool = {"name": "get_weather", "description": "The weather", "input_schema": WEATHER["function"]["parameters"]}
    message = anthropic_client(proxy).messages.create(model="c", max_tokens=64, messages=ASK, tools=[tool])
    assert message.stop_reason == "tool_use"
    (use,) = message.content
    assert (use.type, use.name, use.input) == ("tool_use", "get_weather", {"city": "Paris"})
    sent = fake_tgi.last.json()
    assert sent["tools"][0]["function"]["parameters"] == tool["input_schema"]
    with anthropic_client(proxy).messages.stream(model="c", max_tokens=64, messages=ASK, tools=[tool]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert (final.content[0].name, final.content[0].input) == ("get_weather", {"city": "Paris"})
    # The tool's result goes back as OpenAI's tool message.
    history = [
        *ASK,
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C, sunny"}]},
    ]
    fake_tgi.tool_call = None
    fake_tgi.reply = "It is 18 C and sunny in Paris."
    answer = anthropic_client(proxy).messages.create(model="c", max_tokens=64, messages=history, tools=[tool])
    assert answer.content[0].text == "It is 18 C and sunny in Paris."
    messages = fake_tgi.last.json()["messages"]
    assert messages[1]["tool_calls"][0]["id"] == use.id
    assert messages[2] == {"role": "tool", "tool_call_id": use.id, "content": "18 C, sunny"}


def test_claude_model_names_are_routed_and_renamed(start_proxy, fake_tgi):
    targets = {
        "tgi": {"url": "http://127.0.0.1:9", "mapping": {"/info": None}},
        "server": {
            "url": fake_tgi.url,
            "models": {"claude-sonnet-4-5": "Qwen/Qwen3-Coder-30B", "local-model": None},
            "mapping": {"/messages": MESSAGES_ROUTE},
        },
    }
    proxy = start_proxy(proxy_config(targets, default="tgi"))
    fake_tgi.reply = "Routed."
    message = anthropic_client(proxy).messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=ASK)
    assert message.content[0].text == "Routed."
    assert fake_tgi.last.json()["model"] == "Qwen/Qwen3-Coder-30B"
    listed = anthropic_client(proxy).models.list()
    assert [model.id for model in listed.data] == ["tgi", "claude-sonnet-4-5", "local-model"]
    assert listed.data[1].type == "model"
