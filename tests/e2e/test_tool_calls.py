"""Tool calls on TGI's /generate through every front (OpenAI Chat, Anthropic Messages, OpenAI
Responses) and LangChain: calls read back from the generated text, whole and streamed, and their
results sent back. Each family's own format is in test_tool_formats.py."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from conftest import (
    ASK,
    GRAMMAR_CALL,
    KEY,
    WEATHER,
    auth,
    grammar_choices,
    grammar_no_tool,
    proxy_config,
)
from support.models import (
    CALL,
    PARSERS,
    QWEN,
    model_folder,
    template_entry,
)
from support.tool_calls import (
    ANTHROPIC_WEATHER,
    COMMON,
    ROUTES,
    ask_openai,
    openai_client,
    qwen_proxy,
    with_results,
    with_tool_result,
)


@pytest.fixture
def proxy(start_proxy, fake_tgi, tmp_path):
    return qwen_proxy(start_proxy, fake_tgi, tmp_path)


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


PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hi\n*** End Patch"
CODEX_TOOLS = [
    {
        "type": "custom",
        "name": "apply_patch",
        "description": "Edit files",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: /(.|\\n)+/"},
    },
    {
        "type": "namespace",
        "name": "mcp",
        "description": "MCP tools",
        "tools": [{"type": "function", **WEATHER["function"]}],
    },
    {"type": "web_search"},
]


@pytest.mark.parametrize("stream", [False, True])
def test_codexs_free_form_tool_is_called_back_as_it_was_offered(proxy, fake_tgi, stream):
    """Codex's apply_patch is a `custom` tool: the model gets it as a function of one string, and
    Codex gets a custom_tool_call with its `input`; namespaces are flattened, hosted tools dropped."""
    fake_tgi.reply = (
        "<tool_call>\n" + json.dumps({"name": "apply_patch", "arguments": {"input": PATCH}}) + "\n</tool_call>"
    )
    client = openai_client(proxy)
    request = {"model": "m", "input": "Add hello.txt", "tools": CODEX_TOOLS, "store": False}
    if stream:
        events = list(client.responses.create(stream=True, **request))
        kinds = [event.type for event in events]
        assert "response.custom_tool_call_input.done" in kinds and kinds[-1] == "response.completed"
        response = events[-1].response
    else:
        response = client.responses.create(**request)
    (call,) = response.output
    assert (call.type, call.name, call.input) == ("custom_tool_call", "apply_patch", PATCH)
    listed = fake_tgi.last.json()["inputs"].split("<tools>\n")[1].split("\n</tools>")[0]
    assert [json.loads(line)["function"]["name"] for line in listed.splitlines()] == ["apply_patch", "get_weather"]
    # Codex sends the call and its output back on the next turn.
    fake_tgi.reply = "Done."
    history = [
        {"role": "user", "content": "Add hello.txt"},
        call.model_dump(exclude_none=True),
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Success."},
    ]
    assert client.responses.create(model="m", input=history, tools=CODEX_TOOLS, store=False).output_text == "Done."
    assert "Success." in fake_tgi.last.json()["inputs"]
