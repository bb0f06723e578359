"""An OpenAI-compatible chat server as the target (the fake TGI's /v1/chat/completions, which answers
as TGI does): OpenAI clients and the Anthropic front, text and tools, streamed and not."""

from __future__ import annotations

import json
import re

import anthropic
import openai
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


COUNT_ROUTE = {
    "in": ["countReqAnthropicToOpenAI", "tokenizeReqOpenAItoCompatible"],
    "out": "countAnsCompatibleToAnthropic",
}
# What Claude Code sends: 24 tools, max_tokens 32,000 whatever the model, streamed, through the beta
# messages API (`?beta=true`) with its beta headers.
CLAUDE_CODE_TOOLS = [
    {"name": f"tool_{index}", "description": f"Tool {index}", "input_schema": WEATHER["function"]["parameters"]}
    for index in range(24)
]


@pytest.fixture(params=["tgi", "vllm"])
def server(request):
    """An OpenAI-compatible server and its chat tokenizer's path: TGI's own chat API, and vLLM."""
    if request.param == "tgi":
        return request.getfixturevalue("fake_tgi"), "/chat_tokenize"
    return request.getfixturevalue("fake_vllm"), "/tokenize"


def test_claude_codes_request_on_an_openai_compatible_server(start_proxy, server):
    double, tokenize_path = server
    mapping = {"/messages": MESSAGES_ROUTE, "/messages/count_tokens": {**COUNT_ROUTE, "path": tokenize_path}}
    proxy = start_proxy(proxy_config({"server": {"url": double.url, "mapping": mapping}}))
    double.reply = "Done."
    beta = anthropic_client(proxy).beta.messages
    request = {"model": "claude-sonnet-4-5", "messages": ASK, "tools": CLAUDE_CODE_TOOLS, "system": "You are Claude."}
    headers = {"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"}
    with beta.stream(**request, max_tokens=32000, extra_headers=headers) as stream:
        message = stream.get_final_message()
    assert message.content[0].text == "Done."
    refused, sent = double.received[-2:]
    assert refused.json()["max_tokens"] == 32000
    # Sent again with the room the prompt leaves, to the path alone: no query string, no beta header.
    assert sent.json()["max_tokens"] == 4096 - message.usage.input_tokens
    assert (sent.path, sent.query) == ("/v1/chat/completions", "")
    assert not any(name.lower().startswith(("anthropic-", "x-stainless")) for name in sent.headers)
    # count_tokens, on the server's own chat tokenizer, agrees with the usage of the same request.
    count = beta.count_tokens(**request, extra_headers=headers)
    assert double.last.path == tokenize_path
    assert count.input_tokens == message.usage.input_tokens


def test_a_prompt_over_the_context_is_anthropics_400_and_openais(start_proxy, server):
    double, _ = server
    mapping = {"/messages": MESSAGES_ROUTE, "/chat/completions": CHAT_ROUTE}
    proxy = start_proxy(proxy_config({"server": {"url": double.url, "mapping": mapping}}))
    long = [{"role": "user", "content": "word " * 5000}]
    for stream in (False, True):
        with pytest.raises(anthropic.BadRequestError) as refused:
            anthropic_client(proxy).messages.create(model="c", max_tokens=100, messages=long, stream=stream)
        error = refused.value.body["error"]
        assert error["type"] == "invalid_request_error"
        assert re.fullmatch(r"prompt is too long: \d+ tokens > 4096 maximum", error["message"])
        with pytest.raises(openai.BadRequestError) as too_long:
            openai_client(proxy).chat.completions.create(model="m", messages=long, max_tokens=100, stream=stream)
        assert too_long.value.body["code"] == "context_length_exceeded"


def test_a_refusal_inside_tgis_200_stream_is_the_clients_400(start_proxy, fake_tgi):
    proxy = start_proxy(proxy_config({"server": {"url": fake_tgi.url, "mapping": {"/chat/completions": CHAT_ROUTE}}}))
    # TGI refuses this frequency_penalty with an error event inside its 200 stream.
    with pytest.raises(openai.BadRequestError) as refused:
        list(openai_client(proxy).chat.completions.create(model="m", messages=ASK, stream=True, frequency_penalty=3))
    assert refused.value.body["type"] == "invalid_request_error"
    assert "`frequency_penalty` must be >= -2.0 and <= 2.0" in refused.value.body["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequences_beyond_the_servers_limit_are_enforced_by_the_proxy(start_proxy, fake_tgi, stream):
    proxy = start_proxy(proxy_config({"server": {"url": fake_tgi.url, "mapping": {"/messages": MESSAGES_ROUTE}}}))
    assert "target server: model fake-org/fake-llama-7b-chat, context 4096 tokens (from /info)" in proxy.log()
    fake_tgi.reply = "one two three four five six seven"
    stops = ["A", "B", "C", "D", "five"]  # TGI's /info says it takes 4
    request = {"model": "c", "max_tokens": 50, "messages": ASK, "stop_sequences": stops}
    if stream:
        with anthropic_client(proxy).messages.stream(**request) as events:
            message = events.get_final_message()
    else:
        message = anthropic_client(proxy).messages.create(**request)
    assert message.content[0].text == "one two three four "  # cut before the stop, as the server cuts
    assert fake_tgi.last.json()["stop"] == ["A", "B", "C", "D"]


@pytest.mark.parametrize(("top_p", "sent"), [(1, {}), (0, {"temperature": 0}), (0.5, {"top_p": 0.5})])
def test_top_p_is_put_within_tgis_range(proxy, fake_tgi, top_p, sent):
    """TGI's chat API refuses top_p outside (0, 1), which OpenAI clients may send."""
    answer = openai_client(proxy).chat.completions.create(model="m", messages=ASK, top_p=top_p)
    assert answer.choices[0].message.content
    received = fake_tgi.last.json()
    assert {name: received[name] for name in ("top_p", "temperature") if name in received} == sent
