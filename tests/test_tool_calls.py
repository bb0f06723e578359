"""Tool calls on TGI's /generate: the tools rendered by the model's own chat template (Qwen 2.5's,
from its model repository), the calls read back from the generated text, through all three fronts."""

from __future__ import annotations

import json
import shutil

import anthropic
import httpx
import pytest
from openai import OpenAI

from conftest import DATA, KEY, auth, proxy_config

QWEN = DATA / "tool-templates" / "Qwen-Qwen2.5-7B-Instruct.jinja"
COMMON = {"path": "/generate", "prompter": "chat_template", "template": "Qwen", "tool_parser": "hermes"}
ROUTES = {
    "/chat/completions": {**COMMON, "in": "chatReqOpenAItoTGI", "out": "chatAnsTGItoOpenAI"},
    "/messages": {
        **COMMON,
        "in": ["messagesReqAnthropicToOpenAI", "chatReqOpenAItoTGI"],
        "out": ["chatAnsTGItoOpenAI", "messagesAnsOpenAIToAnthropic"],
    },
    "/responses": {
        **COMMON,
        "in": ["responsesReqToOpenAI", "chatReqOpenAItoTGI"],
        "out": ["chatAnsTGItoOpenAI", "responsesAnsOpenAIToResponses"],
    },
    "/no-tools/chat/completions": {
        **COMMON,
        "template": "llama3",
        "in": "chatReqOpenAItoTGI",
        "out": "chatAnsTGItoOpenAI",
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def proxy(start_proxy, fake_tgi, tmp_path):
    model = tmp_path / "qwen"
    model.mkdir()
    shutil.copy(QWEN, model / "chat_template.jinja")
    (model / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": ROUTES}}, templates={"Qwen": {"tokenizer_config": str(model)}}
    )
    return start_proxy(config)


def openai_client(proxy) -> OpenAI:
    return OpenAI(base_url=f"{proxy.url}/v1", api_key=KEY, max_retries=0, _strict_response_validation=True)


def test_a_tool_round_trip_with_openai(proxy, fake_tgi):
    fake_tgi.reply = CALL
    answer = openai_client(proxy).chat.completions.create(model="qwen", messages=ASK, tools=[WEATHER])
    prompt = fake_tgi.last.json()["inputs"]
    assert "<tools>\n" + json.dumps(WEATHER) + "\n</tools>" in prompt  # the model's own words for tools
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    fake_tgi.reply = "It is 18 C and sunny."
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"},
    ]
    final = openai_client(proxy).chat.completions.create(model="qwen", messages=history, tools=[WEATHER])
    assert final.choices[0].message.content == "It is 18 C and sunny."
    assert final.choices[0].finish_reason == "stop"
    prompt = fake_tgi.last.json()["inputs"]
    # The call rendered with its arguments as a mapping, as the template expects; then its result.
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\n18 C, sunny\n</tool_response>" in prompt


def test_a_tool_round_trip_with_anthropic(proxy, fake_tgi):
    client = anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0)
    tool = {"name": "get_weather", "description": "The weather", "input_schema": WEATHER["function"]["parameters"]}
    fake_tgi.reply = "Let me check. " + CALL
    message = client.messages.create(model="qwen", max_tokens=64, messages=ASK, tools=[tool])
    assert message.stop_reason == "tool_use"
    text, use = message.content
    assert text.text == "Let me check."
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
    fake_tgi.reply = "Sunny."
    history = [
        *ASK,
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C"}]},
    ]
    final = client.messages.create(model="qwen", max_tokens=64, messages=history, tools=[tool])
    assert final.content[0].text == "Sunny."
    assert "<tool_response>\n18 C\n</tool_response>" in fake_tgi.last.json()["inputs"]


def test_a_tool_round_trip_with_responses(proxy, fake_tgi):
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}
    fake_tgi.reply = CALL
    response = openai_client(proxy).responses.create(model="qwen", input="Weather in Paris?", tools=[tool])
    (call,) = response.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    fake_tgi.reply = "Sunny in Paris."
    follow_up = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C"},
    ]
    final = openai_client(proxy).responses.create(model="qwen", input=follow_up, tools=[tool])
    assert final.output_text == "Sunny in Paris."


def test_a_malformed_call_is_text_and_a_template_without_tools_is_a_400(proxy, fake_tgi):
    fake_tgi.reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": </tool_call>'
    answer = openai_client(proxy).chat.completions.create(model="qwen", messages=ASK, tools=[WEATHER])
    assert answer.choices[0].message.content == fake_tgi.reply
    assert answer.choices[0].finish_reason == "stop"
    body = {"model": "m", "messages": ASK, "tools": [WEATHER]}
    refused = httpx.post(f"{proxy.url}/no-tools/chat/completions", json=body, headers=auth())
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "tool calling needs a chat template that renders tools (or tool_parser: grammar)"
    )


def test_streamed_tool_calls_through_every_front(proxy, fake_tgi):
    # Text, then two parallel calls, the markers split across the stream's tokens.
    fake_tgi.reply = "Checking. " + CALL + "\n" + CALL.replace("Paris", "Lyon")
    chunks = list(
        openai_client(proxy).chat.completions.create(model="qwen", messages=ASK, tools=[WEATHER], stream=True)
    )
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert content.strip() == "Checking."
    assert "<tool" not in content
    calls = [call for chunk in chunks if chunk.choices for call in (chunk.choices[0].delta.tool_calls or [])]
    named = [call for call in calls if call.id]
    assert [call.function.name for call in named] == ["get_weather", "get_weather"]
    arguments = {index: "" for index in (0, 1)}
    for call in calls:
        arguments[call.index] += call.function.arguments or ""
    assert [json.loads(arguments[index]) for index in (0, 1)] == [{"city": "Paris"}, {"city": "Lyon"}]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    client = anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0)
    tool = {"name": "get_weather", "description": "The weather", "input_schema": WEATHER["function"]["parameters"]}
    with client.messages.stream(model="qwen", max_tokens=128, messages=ASK, tools=[tool]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["text", "tool_use", "tool_use"]
    assert [block.input for block in final.content[1:]] == [{"city": "Paris"}, {"city": "Lyon"}]

    events = list(
        openai_client(proxy).responses.create(
            model="qwen", input="Weather?", tools=[{"type": "function", **WEATHER["function"]}], stream=True
        )
    )
    done = [event.item for event in events if event.type == "response.output_item.done"]
    assert [item.type for item in done] == ["message", "function_call", "function_call"]
    assert json.loads(done[2].arguments) == {"city": "Lyon"}


LLAMA31 = DATA / "tool-templates" / "meta-llama-Llama-3.1-8B-Instruct.jinja"


@pytest.mark.parametrize("stream", [False, True])
def test_llama3_json_calls_with_llama_3_1s_own_template(start_proxy, fake_tgi, tmp_path, stream):
    model = tmp_path / "llama31"
    model.mkdir()
    shutil.copy(LLAMA31, model / "chat_template.jinja")
    (model / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
    )
    route = {**ROUTES["/chat/completions"], "template": "Llama31", "tool_parser": "llama3_json"}
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": {"/chat/completions": route}}},
        templates={"Llama31": {"tokenizer_config": str(model)}},
    )
    proxy = start_proxy(config)

    def ask(messages: list) -> tuple[str | None, list]:
        kwargs = {"model": "llama", "messages": messages, "tools": [WEATHER]}
        if not stream:
            message = openai_client(proxy).chat.completions.create(**kwargs).choices[0].message
            return message.content, [
                (c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []
            ]
        chunks = list(openai_client(proxy).chat.completions.create(**kwargs, stream=True))
        content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) or None
        calls = [call for chunk in chunks if chunk.choices for call in (chunk.choices[0].delta.tool_calls or [])]
        named = [(call.id, call.function.name) for call in calls if call.id]
        arguments = "".join(call.function.arguments or "" for call in calls)
        return content, [(*named[0], json.loads(arguments))] if named else []

    fake_tgi.reply = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    content, calls = ask(ASK)
    prompt = fake_tgi.last.json()["inputs"]
    assert "Given the following functions" in prompt and '"name": "get_weather"' in prompt
    assert content is None
    (call_id, name, arguments) = calls[0]
    assert (name, arguments) == ("get_weather", {"city": "Paris"})
    fake_tgi.reply = "It is sunny in Paris."
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "18 C, sunny"},
    ]
    content, calls = ask(history)
    assert (content, calls) == ("It is sunny in Paris.", [])
    prompt = fake_tgi.last.json()["inputs"]
    assert '{"name": "get_weather", "parameters": {"city": "Paris"}}' in prompt
    # A string is iterable to Jinja: this template writes it as JSON, as transformers renders it too.
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"18 C, sunny"' in prompt


def test_langchain_bind_tools_and_structured_output(proxy, fake_tgi):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    class Weather(BaseModel):
        """The weather of a city."""

        city: str
        sky: str

    model = ChatOpenAI(base_url=f"{proxy.url}/v1", api_key=KEY, model="qwen", max_retries=0)
    fake_tgi.reply = CALL
    message = model.bind_tools([get_weather]).invoke("What is the weather in Paris?")
    assert [(call["name"], call["args"]) for call in message.tool_calls] == [("get_weather", {"city": "Paris"})]
    fake_tgi.reply = '<tool_call>\n{"name": "Weather", "arguments": {"city": "Paris", "sky": "clear"}}\n</tool_call>'
    structured = model.with_structured_output(Weather, method="function_calling").invoke("Weather in Paris?")
    assert structured == Weather(city="Paris", sky="clear")


@pytest.mark.parametrize("stream", [False, True])
def test_grammar_mode_on_a_template_that_knows_no_tools(start_proxy, fake_tgi, stream):
    route = {**ROUTES["/chat/completions"], "template": "llama3", "tool_parser": "grammar"}
    proxy = start_proxy(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/chat/completions": route}}}))

    def ask(**extra) -> tuple[str | None, list, str]:
        kwargs = {"model": "m", "messages": ASK, "tools": [WEATHER], **extra}
        if not stream:
            choice = openai_client(proxy).chat.completions.create(**kwargs).choices[0]
            calls = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []]
            return choice.message.content, calls, choice.finish_reason
        chunks = list(openai_client(proxy).chat.completions.create(**kwargs, stream=True))
        content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) or None
        deltas = [call for chunk in chunks if chunk.choices for call in (chunk.choices[0].delta.tool_calls or [])]
        calls = (
            [(deltas[0].function.name, json.loads("".join(d.function.arguments or "" for d in deltas)))]
            if deltas
            else []
        )
        return content, calls, chunks[-1].choices[0].finish_reason

    fake_tgi.reply = '{"name": "get_weather", "arguments": {"city": "Paris"}}'  # what the grammar allows
    assert ask() == (None, [("get_weather", {"city": "Paris"})], "tool_calls")
    sent = fake_tgi.last.json()
    grammar = sent["parameters"]["grammar"]
    assert grammar["type"] == "json"
    assert [option["properties"]["name"]["const"] for option in grammar["value"]["oneOf"]] == ["get_weather", "no_tool"]
    assert "JSON Schema:\n" + json.dumps([WEATHER]) in sent["inputs"]  # the tools, told in the prompt
    fake_tgi.reply = '{"name": "no_tool", "content": "I cannot tell."}'
    assert ask() == ("I cannot tell.", [], "stop")
    # A forced call leaves out the no_tool choice.
    fake_tgi.reply = '{"name": "get_weather", "arguments": {"city": "Lyon"}}'
    ask(tool_choice="required")
    options = fake_tgi.last.json()["parameters"]["grammar"]["value"]["oneOf"]
    assert [option["properties"]["name"]["const"] for option in options] == ["get_weather"]
