"""Tool calls on TGI's /generate: the tools rendered by the models' own chat templates (Qwen 2.5's,
Qwen3-Coder's, Llama 3.1's, Mistral Nemo's and Mistral Small 3.2's, as llama.cpp keeps them), the
calls read back from the generated text, through all three fronts."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest
import yaml
from openai import OpenAI

from conftest import (
    ASK,
    GRAMMAR_CALL,
    KEY,
    WEATHER,
    auth,
    grammar_choices,
    grammar_no_tool,
    proxy_config,
    run_cli,
)
from support.models import (
    CALL,
    LLAMA31,
    NEMO,
    PARSERS,
    QWEN,
    QWEN3_CODER,
    SMALL_32,
    XML_CALL,
    model_folder,
    template_entry,
)

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
ANTHROPIC_WEATHER = {
    "name": "get_weather",
    "description": "The weather",
    "input_schema": WEATHER["function"]["parameters"],
}


@pytest.fixture
def proxy(start_proxy, fake_tgi, tmp_path):
    qwen = model_folder(tmp_path, QWEN, eos_token="<|im_end|>")
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": ROUTES}}, templates={"Qwen": {"tokenizer_config": qwen}}
    )
    return start_proxy(config)


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
    fake_tgi.reply = "Let me check. " + CALL
    message = client.messages.create(model="qwen", max_tokens=64, messages=ASK, tools=[ANTHROPIC_WEATHER])
    assert message.stop_reason == "tool_use"
    text, use = message.content
    assert text.text == "Let me check."
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
    fake_tgi.reply = "Sunny."
    history = with_tool_result(ASK, use, "18 C")
    final = client.messages.create(model="qwen", max_tokens=64, messages=history, tools=[ANTHROPIC_WEATHER])
    assert final.content[0].text == "Sunny."
    assert "<tool_response>\n18 C\n</tool_response>" in fake_tgi.last.json()["inputs"]


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
    with client.messages.stream(model="qwen", max_tokens=128, messages=ASK, tools=[ANTHROPIC_WEATHER]) as stream:
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


@pytest.mark.parametrize("stream", [False, True])
def test_llama3_json_calls_with_llama_3_1s_own_template(start_proxy, fake_tgi, tmp_path, stream):
    model = model_folder(tmp_path, LLAMA31, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    route = {**ROUTES["/chat/completions"], "template": "Llama31", "tool_parser": "llama3_json"}
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": {"/chat/completions": route}}},
        templates={"Llama31": {"tokenizer_config": model}},
    )
    proxy = start_proxy(config)
    fake_tgi.reply = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    content, calls, _ = ask_openai(proxy, ASK, stream)
    prompt = fake_tgi.last.json()["inputs"]
    assert "Given the following functions" in prompt and '"name": "get_weather"' in prompt
    assert content is None
    (call_id, name, arguments) = calls[0]
    assert (name, arguments) == ("get_weather", {"city": "Paris"})
    fake_tgi.reply = "It is sunny in Paris."
    content, calls, _ = ask_openai(proxy, with_results(ASK, calls[:1], "18 C, sunny"), stream)
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
    # LangChain names the tool it wants: TGI's grammar forces that call, so the answer is its JSON.
    fake_tgi.reply = '{"function": {"_name": "Weather", "city": "Paris", "sky": "clear"}}'
    structured = model.with_structured_output(Weather, method="function_calling").invoke("Weather in Paris?")
    assert structured == Weather(city="Paris", sky="clear")
    assert grammar_choices(fake_tgi.last.json()) == ["Weather"]


@pytest.mark.parametrize("stream", [False, True])
def test_grammar_mode_on_a_template_that_knows_no_tools(start_proxy, fake_tgi, stream):
    route = {**ROUTES["/chat/completions"], "template": "llama3", "tool_parser": "grammar"}
    proxy = start_proxy(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/chat/completions": route}}}))

    def ask(**extra) -> tuple[str | None, list, str]:
        content, calls, finish_reason = ask_openai(proxy, ASK, stream, **extra)
        return content, [(name, arguments) for _, name, arguments in calls], finish_reason

    fake_tgi.reply = GRAMMAR_CALL  # what the grammar allows
    assert ask() == (None, [("get_weather", {"city": "Paris"})], "tool_calls")
    sent = fake_tgi.last.json()
    assert sent["parameters"]["grammar"]["type"] == "json"
    assert grammar_choices(sent) == ["get_weather", "no_tool"]
    assert "JSON Schema:\n" + json.dumps([WEATHER]) in sent["inputs"]  # the tools, told in the prompt
    assert '{"function": {"_name": "no_tool", "content": your answer}} when no tool is needed' in sent["inputs"]
    fake_tgi.reply = grammar_no_tool("I cannot tell.")
    assert ask() == ("I cannot tell.", [], "stop")
    # A forced call leaves out the no_tool choice.
    fake_tgi.reply = '{"function": {"_name": "get_weather", "city": "Lyon"}}'
    ask(tool_choice="required")
    assert grammar_choices(fake_tgi.last.json()) == ["get_weather"]


def test_the_fake_leaves_special_tokens_out_of_generated_text_as_tgi_does(fake_tgi):
    fake_tgi.reply = '[TOOL_CALLS][{"name": "f", "arguments": {}}]'
    body = {"inputs": "x", "parameters": {"details": True}}
    answer = httpx.post(f"{fake_tgi.url}/generate", json=body).json()
    assert answer["generated_text"] == '[{"name": "f", "arguments": {}}]'
    assert answer["details"]["tokens"][0] == {**answer["details"]["tokens"][0], "text": "[TOOL_CALLS]", "special": True}
    events = httpx.post(f"{fake_tgi.url}/generate_stream", json=body).text.split("\n\n")
    first = json.loads(events[0].removeprefix("data:"))
    assert (first["token"]["text"], first["token"]["special"]) == ("[TOOL_CALLS]", True)


MISTRAL_ID = re.compile(r"[A-Za-z0-9]{9}")


def mistral_proxy(start_proxy, fake_tgi, tmp_path, template: Path):
    model = model_folder(tmp_path, template, bos_token="<s>", eos_token="</s>")
    mapping = {path: {**route, "template": "Mistral", "tool_parser": "mistral"} for path, route in ROUTES.items()}
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": mapping}}, templates={"Mistral": {"tokenizer_config": model}}
    )
    return start_proxy(config)


@pytest.mark.parametrize("stream", [False, True])
def test_mistral_nemo_calls_and_ids_with_its_own_template(start_proxy, fake_tgi, tmp_path, stream):
    proxy = mistral_proxy(start_proxy, fake_tgi, tmp_path, NEMO)
    # [TOOL_CALLS] is a special token: TGI leaves it out of generated_text, the proxy reads the tokens.
    fake_tgi.reply = "[TOOL_CALLS]" + json.dumps(
        [{"name": "get_weather", "arguments": {"city": city}} for city in ("Paris", "Lyon")]
    )
    content, calls, finish_reason = ask_openai(proxy, ASK, stream)
    assert '[AVAILABLE_TOOLS][{"type": "function", "function": {"name": "get_weather"' in fake_tgi.last.json()["inputs"]
    assert (content, finish_reason) == (None, "tool_calls")
    assert [(name, arguments) for _, name, arguments in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Lyon"}),
    ]
    fake_tgi.reply = "Sunny in both."
    assert ask_openai(proxy, with_results(ASK, calls, "18 C"), stream)[:2] == ("Sunny in both.", [])
    prompt = fake_tgi.last.json()["inputs"]
    # The template takes 9-character ids only: each client id became one, the same for its result.
    ids = re.findall(r'"arguments": \{"city": "(?:Paris|Lyon)"\}, "id": "([^"]*)"\}', prompt)
    assert len(ids) == 2 and all(MISTRAL_ID.fullmatch(id) for id in ids) and ids[0] != ids[1]
    assert re.findall(r'"call_id": "([^"]*)"\}\[/TOOL_RESULTS\]', prompt) == ids


def test_mistral_small_3_2_calls_through_every_front(start_proxy, fake_tgi, tmp_path):
    proxy = mistral_proxy(start_proxy, fake_tgi, tmp_path, SMALL_32)
    # The newer format: name[ARGS]{...} after each [TOOL_CALLS], with text before.
    fake_tgi.reply = (
        'Checking. [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_weather[ARGS]{"city": "Lyon"}'
    )
    for stream in (False, True):
        content, calls, finish_reason = ask_openai(proxy, ASK, stream)
        assert (content.strip(), finish_reason) == ("Checking.", "tool_calls")
        assert [arguments for _, _, arguments in calls] == [{"city": "Paris"}, {"city": "Lyon"}]
    client = anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0)
    with client.messages.stream(model="m", max_tokens=128, messages=ASK, tools=[ANTHROPIC_WEATHER]) as events:
        message = events.get_final_message()
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    use = message.content[1]
    fake_tgi.reply = "Sunny."
    history = with_tool_result(ASK, use, "18 C")
    assert (
        client.messages.create(model="m", max_tokens=64, messages=history, tools=[ANTHROPIC_WEATHER]).content[0].text
        == "Sunny."
    )
    prompt = fake_tgi.last.json()["inputs"]
    (call_id,) = re.findall(r'\[TOOL_CALLS\]get_weather\[CALL_ID\](\w+)\[ARGS\]\{"city": "Paris"\}', prompt)
    assert MISTRAL_ID.fullmatch(call_id) and f"[TOOL_RESULTS]{call_id}[TOOL_CONTENT]18 C[/TOOL_RESULTS]" in prompt
    fake_tgi.reply = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
    events = list(
        openai_client(proxy).responses.create(
            model="m", input="Weather?", tools=[{"type": "function", **WEATHER["function"]}], stream=True
        )
    )
    (done,) = [event.item for event in events if event.type == "response.output_item.done"]
    assert (done.type, json.loads(done.arguments)) == ("function_call", {"city": "Paris"})


@pytest.mark.parametrize("stream", [False, True])
def test_mistral_text_streams_as_it_comes_and_a_malformed_call_stays_text(start_proxy, fake_tgi, tmp_path, stream):
    proxy = mistral_proxy(start_proxy, fake_tgi, tmp_path, SMALL_32)
    fake_tgi.reply = "No tool needed: it is [TOOL sunny."  # a marker's beginning, then not
    assert ask_openai(proxy, ASK, stream) == ("No tool needed: it is [TOOL sunny.", [], "stop")
    fake_tgi.reply = '[TOOL_CALLS]get_weather[ARGS]{"city": '
    assert ask_openai(proxy, ASK, stream) == ('[TOOL_CALLS]get_weather[ARGS]{"city": ', [], "stop")


@pytest.mark.parametrize("stream", [False, True])
def test_hermes_markers_that_are_special_tokens_are_read_from_the_tokens(proxy, fake_tgi, stream):
    fake_tgi.special_tokens |= {"<tool_call>", "</tool_call>"}  # as in Hermes 2 Pro's tokenizer
    fake_tgi.reply = "Let me see. " + CALL
    content, calls, finish_reason = ask_openai(proxy, ASK, stream)
    assert (content.strip(), finish_reason) == ("Let me see.", "tool_calls")
    assert [(name, arguments) for _, name, arguments in calls] == [("get_weather", {"city": "Paris"})]
    # Without tools, special tokens stay out of the answer, as TGI leaves them out.
    chat = {"model": "m", "messages": ASK}
    answer = openai_client(proxy).chat.completions.create(**chat)
    assert (
        answer.choices[0].message.content == 'Let me see. \n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    )


@pytest.mark.parametrize("stream", [False, True])
def test_a_forced_tool_choice_is_forced_by_tgis_grammar(proxy, fake_tgi, stream):
    fake_tgi.reply = GRAMMAR_CALL  # what the grammar allows
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", named):
        content, calls, finish_reason = ask_openai(proxy, ASK, stream, tool_choice=choice)
        assert (content, finish_reason) == (None, "tool_calls")
        assert [(name, arguments) for _, name, arguments in calls] == [("get_weather", {"city": "Paris"})]
        sent = fake_tgi.last.json()
        assert "<tools>" in sent["inputs"]  # still told by its own template
        assert grammar_choices(sent) == ["get_weather"]
    ask_openai(proxy, ASK, stream, tool_choice="auto")
    assert "grammar" not in fake_tgi.last.json()["parameters"]


def test_auto_picks_each_templates_parser_and_check_says_which(start_proxy, fake_tgi, tmp_path):
    templates = {
        "Qwen": {"tokenizer_config": model_folder(tmp_path, QWEN, eos_token="<|im_end|>")},
        "Llama31": {"tokenizer_config": model_folder(tmp_path, LLAMA31, eos_token="<|eot_id|>")},
        "Nemo": {"tokenizer_config": model_folder(tmp_path, NEMO, bos_token="<s>", eos_token="</s>")},
        "Coder": {"tokenizer_config": model_folder(tmp_path, QWEN3_CODER, eos_token="<|im_end|>")},
    }
    route = {**ROUTES["/chat/completions"], "tool_parser": "auto"}
    mapping = {f"/{name}/chat/completions": {**route, "template": name} for name in [*templates, "llama3"]}
    config = proxy_config({"tgi": {"url": fake_tgi.url, "mapping": mapping}}, templates=templates)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("--config", str(tmp_path / "config.yaml"), "--check")
    assert result.returncode == 0, result.stderr
    picked = dict(re.findall(r"mapping\./(\w+)/chat/completions: tool_parser auto picked (\w+)", result.stdout))
    assert picked == {
        "Qwen": "hermes",
        "Llama31": "llama3_json",
        "Nemo": "mistral",
        "Coder": "qwen3_coder",
        "llama3": "grammar",
    }
    proxy = start_proxy(config)
    fake_tgi.reply = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]'
    body = {"model": "m", "messages": ASK, "tools": [WEATHER]}
    answer = httpx.post(f"{proxy.url}/Nemo/chat/completions", json=body, headers=auth()).json()
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


SUNNY = "Sunny in Paris."


def chat_round_trip(proxy, fake_tgi, stream: bool, answer: str = SUNNY) -> str | None:
    _, calls, finish_reason = ask_openai(proxy, ASK, stream)
    assert ([(name, arguments) for _, name, arguments in calls], finish_reason) == (
        [("get_weather", {"city": "Paris"})],
        "tool_calls",
    )
    fake_tgi.reply = answer
    return ask_openai(proxy, with_results(ASK, calls[:1], "18 C"), stream)[0]


def messages_round_trip(proxy, fake_tgi, stream: bool, answer: str = SUNNY) -> str | None:
    client = anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0)

    def ask(messages: list) -> anthropic.types.Message:
        if not stream:
            return client.messages.create(model="m", max_tokens=128, messages=messages, tools=[ANTHROPIC_WEATHER])
        with client.messages.stream(model="m", max_tokens=128, messages=messages, tools=[ANTHROPIC_WEATHER]) as events:
            return events.get_final_message()

    message = ask(ASK)
    uses = [block for block in message.content if block.type == "tool_use"]
    assert ([(use.name, use.input) for use in uses], message.stop_reason) == (
        [("get_weather", {"city": "Paris"})],
        "tool_use",
    )
    fake_tgi.reply = answer
    use = uses[0]
    history = with_tool_result(ASK, use, "18 C")
    return "".join(block.text for block in ask(history).content if block.type == "text")


def responses_round_trip(proxy, fake_tgi, stream: bool, answer: str = SUNNY) -> str | None:
    client = openai_client(proxy)
    tool = {"type": "function", **WEATHER["function"]}

    def ask(given: str | list) -> Any:
        if not stream:
            return client.responses.create(model="m", input=given, tools=[tool])
        events = list(client.responses.create(model="m", input=given, tools=[tool], stream=True))
        return events[-1].response

    (call,) = [item for item in ask("Weather in Paris?").output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    fake_tgi.reply = answer
    follow_up = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C"},
    ]
    return ask(follow_up).output_text


@pytest.mark.parametrize("parser", PARSERS)
def test_a_round_trip_with_each_parser_through_every_front_streamed_and_not(start_proxy, fake_tgi, tmp_path, parser):
    template, tokens, call, rendered = PARSERS[parser]
    templates = {"Model": template_entry(tmp_path, template, tokens)}
    mapping = {
        path: {**route, "template": "Model", "tool_parser": parser}
        for path, route in ROUTES.items()
        if path != "/no-tools/chat/completions"
    }
    proxy = start_proxy(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": mapping}}, templates=templates))
    # Under a grammar, a text answer too is written in the grammar's shape.
    answer = grammar_no_tool(SUNNY) if parser == "grammar" else SUNNY
    for round_trip in (chat_round_trip, messages_round_trip, responses_round_trip):
        for stream in (False, True):
            fake_tgi.reply = call
            assert round_trip(proxy, fake_tgi, stream, answer) == SUNNY, (round_trip.__name__, stream)
            prompt = fake_tgi.last.json()["inputs"]
            assert rendered in prompt and "18 C" in prompt  # the call and its result, told the model


def test_a_stream_held_for_a_whole_call_is_kept_alive(start_proxy, fake_tgi, tmp_path):
    qwen = model_folder(tmp_path, QWEN, eos_token="<|im_end|>")
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": ROUTES}},
        templates={"Qwen": {"tokenizer_config": qwen}},
        system={"stream_keep_alive": 0.05},
    )
    proxy = start_proxy(config)
    # A call of 16 tokens at 30 ms each: half a second in which the client would hear nothing.
    fake_tgi.reply = CALL.replace('"Paris"', '"' + " ".join(["Paris"] * 9) + '"')
    fake_tgi.token_delay = 0.03
    for path, body, keep_alive in (
        ("/v1/chat/completions", {"model": "m", "messages": ASK, "tools": [WEATHER], "stream": True}, ": keep-alive"),
        (
            "/v1/messages",
            {"model": "m", "max_tokens": 64, "messages": ASK, "tools": [ANTHROPIC_WEATHER], "stream": True},
            "event: ping",
        ),
    ):
        with httpx.stream("POST", proxy.url + path, json=body, headers=auth()) as answer:
            lines = list(answer.iter_lines())
        assert lines.count(keep_alive) >= 4, lines
        assert any('"get_weather"' in line for line in lines)
    # The clients' own parsers skip them.
    assert ask_openai(proxy, ASK, stream=True)[2] == "tool_calls"
    with anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0).messages.stream(
        model="m", max_tokens=64, messages=ASK, tools=[ANTHROPIC_WEATHER]
    ) as events:
        assert events.get_final_message().stop_reason == "tool_use"


@pytest.mark.parametrize("stream", [False, True])
def test_qwen3_coder_xml_calls_typed_by_the_tools_schemas(start_proxy, fake_tgi, tmp_path, stream):
    coder = model_folder(tmp_path, QWEN3_CODER, eos_token="<|im_end|>")
    route = {**ROUTES["/chat/completions"], "template": "Coder", "tool_parser": "qwen3_coder"}
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": {"/chat/completions": route}}},
        templates={"Coder": {"tokenizer_config": coder}},
    )
    proxy = start_proxy(config)
    write = {
        "type": "function",
        "function": {
            "name": "write_file",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "content": {"type": "string"},
                    "mode": {"type": "integer"},
                    "backup": {"type": "boolean"},
                    "tags": {"type": "array"},
                },
            },
        },
    }
    fake_tgi.reply = (
        "I will write it.\n<tool_call>\n<function=write_file>\n<parameter=path>\n/tmp/a.py\n</parameter>\n"
        "<parameter=content>\ndef f():\n    return 1\n</parameter>\n<parameter=mode>\n420\n</parameter>\n"
        '<parameter=backup>\nfalse\n</parameter>\n<parameter=tags>\n["x", "y"]\n</parameter>\n'
        "</function>\n</tool_call>\n" + XML_CALL + "\n<tool_call>\n<function=get_weather>\n</tool_call>"
    )
    content, calls, finish_reason = ask_openai(proxy, ASK, stream, tools=[write, WEATHER])
    assert finish_reason == "tool_calls"
    # The last call has no closing </function>: read all the same, as Qwen3-Coder sometimes writes it.
    assert [(name, arguments) for _, name, arguments in calls] == [
        (
            "write_file",
            {
                "path": "/tmp/a.py",
                "content": "def f():\n    return 1",
                "mode": 420,
                "backup": False,
                "tags": ["x", "y"],
            },
        ),
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {}),
    ]
    assert content.strip() == "I will write it."
    assert "# Tools" in fake_tgi.last.json()["inputs"] and "<name>write_file</name>" in fake_tgi.last.json()["inputs"]
    fake_tgi.reply = "<tool_call>\nnot a call\n</tool_call>"
    assert ask_openai(proxy, ASK, stream)[:2] == ("<tool_call>\nnot a call\n</tool_call>", [])


def test_each_mistral_call_is_streamed_once_the_next_begins(start_proxy, fake_tgi, tmp_path):
    proxy = mistral_proxy(start_proxy, fake_tgi, tmp_path, SMALL_32)
    fake_tgi.token_delay = 0.1
    fake_tgi.reply = (
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_weather[ARGS]{"city": '
        + '"Lyon" ' * 6  # the second call's arguments take a while: not valid JSON, so it stays text
        + "}"
    )
    body = {"model": "m", "messages": ASK, "tools": [WEATHER], "stream": True}
    seen: list[tuple[float, str]] = []
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, headers=auth()) as answer:
        for line in answer.iter_lines():
            seen.append((time.monotonic(), line))
    named = [when for when, line in seen if '"name": "get_weather"' in line or '"name":"get_weather"' in line]
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for _, line in seen
        if line.startswith("data: {") and json.loads(line[6:])["choices"]
    )
    assert len(named) == 1 and seen[-1][0] - named[0] > 0.4  # the first call came long before the end
    assert text == '[TOOL_CALLS]get_weather[ARGS]{"city": ' + '"Lyon" ' * 6 + "}"


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_calls_false_keeps_the_first_call(proxy, fake_tgi, stream):
    fake_tgi.reply = CALL + "\n" + CALL.replace("Paris", "Lyon")
    _, calls, _ = ask_openai(proxy, ASK, stream, parallel_tool_calls=False)
    assert [arguments for _, _, arguments in calls] == [{"city": "Paris"}]
    assert len(ask_openai(proxy, ASK, stream)[1]) == 2
    client = anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0)
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    kwargs = {"model": "m", "max_tokens": 64, "messages": ASK, "tools": [ANTHROPIC_WEATHER], "tool_choice": choice}
    if stream:
        with client.messages.stream(**kwargs) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    assert [block.input for block in message.content if block.type == "tool_use"] == [{"city": "Paris"}]


def test_a_tool_choice_naming_no_tool_of_the_request_is_a_400(proxy, fake_tgi):
    named = {"type": "function", "function": {"name": "get_time"}}
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(proxy).chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice=named)
    assert refused.value.body["message"] == "'tool_choice' names 'get_time', which is none of the request's tools"
    assert refused.value.body["param"] == "tool_choice"
    assert not fake_tgi.received


def test_the_tool_grammar_is_one_tgi_takes_with_pydantic_references_resolved():
    from mooltiproxy.backends.tgi.grammar import tool_grammar
    from mooltiproxy.parsers.tools.grammar import read_tool_answer

    from support.fake_tgi import _validate_grammar

    nested = {
        "type": "function",
        "function": {
            "name": "plan",
            "parameters": {
                "type": "object",
                "properties": {"step": {"$ref": "#/$defs/Step"}},
                "required": ["step"],
                "$defs": {"Step": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
            },
        },
    }
    grammar = tool_grammar([WEATHER, nested], "auto")
    _validate_grammar(grammar)  # TGI's rules: the meta-schema, and `properties` at the root
    schema = grammar["value"]
    answer = {"function": {"_name": "plan", "step": {"n": 2}}}
    jsonschema.validate(answer, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"function": {"_name": "plan", "step": {"n": "two"}}}, schema)
    assert read_tool_answer(json.dumps(answer)) == ("plan", {"step": {"n": 2}})
    assert read_tool_answer(grammar_no_tool("Hi")) == "Hi"
    assert read_tool_answer('{"function": {"_name": "plan"') is None  # cut short: it stays text


def test_claude_codes_request_on_a_generate_route(start_proxy, fake_tgi, tmp_path):
    """What Claude Code sends (24 tools, max_tokens 32,000, streamed, through the beta messages API
    with its query string), onto TGI's /generate: the call comes back, and count_tokens agrees with
    the usage."""
    qwen = model_folder(tmp_path, QWEN, eos_token="<|im_end|>")
    count = {**COMMON, "path": "/tokenize", "in": ["countReqAnthropicToOpenAI", "tokenizeReqOpenAItoTGI"]}
    mapping = {**ROUTES, "/messages/count_tokens": {**count, "out": "countAnsTGItoAnthropic"}}
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": mapping}}, templates={"Qwen": {"tokenizer_config": qwen}}
    )
    proxy = start_proxy(config)
    tools = [ANTHROPIC_WEATHER] + [{**ANTHROPIC_WEATHER, "name": f"tool_{index}"} for index in range(23)]
    request = {"model": "claude-sonnet-4-5", "messages": ASK, "tools": tools, "system": "You are Claude."}
    beta = anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0).beta.messages
    fake_tgi.reply = CALL
    with beta.stream(**request, max_tokens=32000) as stream:
        message = stream.get_final_message()
    (use,) = [block for block in message.content if block.type == "tool_use"]
    assert (use.name, use.input, message.stop_reason) == ("get_weather", {"city": "Paris"}, "tool_use")
    refused, sent = fake_tgi.received[-2:]
    assert refused.json()["parameters"]["max_new_tokens"] == 32000
    assert sent.json()["parameters"]["max_new_tokens"] == 4096 - message.usage.input_tokens
    assert sent.query == ""
    assert beta.count_tokens(**request).input_tokens == message.usage.input_tokens
