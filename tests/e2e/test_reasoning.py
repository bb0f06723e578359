"""A reasoning model behind TGI's /generate (Qwen3's own template): its thinking told from its
answer through every front, whole and streamed, and sent back on the next turn."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from conftest import KEY, WEATHER, auth
from support import DATA
from support.routes import fronts_onto_tgi
from support.tool_calls import openai_client, template_proxy

QWEN3 = DATA / "reasoning-templates" / "Qwen-Qwen3-0.6B.jinja"
COMMON = {"path": "/generate", "prompter": "chat_template", "template": "Qwen3", "tool_parser": "hermes"}
ROUTES = fronts_onto_tgi(**COMMON)
THOUGHT = "The user wants the weather. I should call get_weather."
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ANSWER = f"<think>\n{THOUGHT}\n</think>\n\nLet me check.\n{CALL}"
ASK = [{"role": "user", "content": "Weather in Paris?"}]
ANTHROPIC_WEATHER = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}


@pytest.fixture
def proxy(start_proxy, fake_tgi, tmp_path):
    return template_proxy(start_proxy, fake_tgi, tmp_path, QWEN3, ROUTES, "Qwen3", eos_token="<|im_end|>")


def test_openai_chat_gets_the_reasoning_apart_whole_and_streamed(proxy, fake_tgi):
    fake_tgi.reply = ANSWER
    message = openai_client(proxy).chat.completions.create(model="m", messages=ASK, tools=[WEATHER]).choices[0].message
    assert message.reasoning_content == THOUGHT
    assert message.content == "Let me check."
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
    chunks = list(openai_client(proxy).chat.completions.create(model="m", messages=ASK, tools=[WEATHER], stream=True))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert "".join(getattr(delta, "reasoning_content", None) or "" for delta in deltas) == THOUGHT
    assert "".join(delta.content or "" for delta in deltas).strip() == "Let me check."
    assert "<think>" not in "".join(delta.content or "" for delta in deltas)
    # The reasoning goes back with the assistant's call; Qwen3's template renders it before the
    # call it led to, and leaves it out once a new question comes, by its own rule.
    call = message.tool_calls[0]
    turn = {"role": "assistant", "content": "Let me check.", "reasoning_content": THOUGHT}
    turn["tool_calls"] = [{"id": call.id, "type": "function", "function": call.function.model_dump()}]
    history = [*ASK, turn, {"role": "tool", "tool_call_id": call.id, "content": "18 C"}]
    fake_tgi.reply = "<think>\nMild.\n</think>\n\n18 C."
    openai_client(proxy).chat.completions.create(model="m", messages=history, tools=[WEATHER])
    assert f"<think>\n{THOUGHT}\n</think>" in fake_tgi.last.json()["inputs"]
    later = [*history, {"role": "assistant", "content": "18 C."}, {"role": "user", "content": "And Lyon?"}]
    openai_client(proxy).chat.completions.create(model="m", messages=later, tools=[WEATHER])
    assert THOUGHT not in fake_tgi.last.json()["inputs"]


def ask_anthropic(proxy, messages: list, stream: bool) -> anthropic.types.Message:
    client = anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0)
    if not stream:
        return client.messages.create(model="m", max_tokens=256, messages=messages, tools=[ANTHROPIC_WEATHER])
    with client.messages.stream(model="m", max_tokens=256, messages=messages, tools=[ANTHROPIC_WEATHER]) as events:
        return events.get_final_message()


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_gets_a_signed_thinking_block_and_sends_it_back(proxy, fake_tgi, stream):
    fake_tgi.reply = ANSWER
    message = ask_anthropic(proxy, ASK, stream)
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    thinking, text, use = message.content
    assert (thinking.thinking, text.text.strip(), message.stop_reason) == (THOUGHT, "Let me check.", "tool_use")
    assert thinking.signature

    # The next turn carries the thinking back: the template puts it before the call it led to.
    def history(signature: str) -> list:
        block = {"type": "thinking", "thinking": THOUGHT, "signature": signature}
        call = {"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}
        result = {"type": "tool_result", "tool_use_id": use.id, "content": "18 C"}
        return [*ASK, {"role": "assistant", "content": [block, call]}, {"role": "user", "content": [result]}]

    fake_tgi.reply = "<think>\nIt is mild.\n</think>\n\n18 C in Paris."
    answer = ask_anthropic(proxy, history(thinking.signature), stream)
    assert [block.type for block in answer.content] == ["thinking", "text"]
    assert answer.content[1].text == "18 C in Paris." and answer.stop_reason == "end_turn"
    assert f"<think>\n{THOUGHT}\n</think>" in fake_tgi.last.json()["inputs"]
    # A signature this proxy did not make is not trusted: the thinking never reaches the model.
    ask_anthropic(proxy, history(thinking.signature[:-4] + "AAAA"), stream)
    assert THOUGHT not in fake_tgi.last.json()["inputs"]


def test_anthropics_stream_signs_its_thinking_before_the_block_ends(proxy, fake_tgi):
    fake_tgi.reply = "<think>\nShort.\n</think>\n\nDone."
    body = {"model": "m", "max_tokens": 64, "messages": ASK, "stream": True}
    events = httpx.post(f"{proxy.url}/v1/messages", json=body, headers=auth()).text.split("\n\n")
    data = [json.loads(event.split("data: ", 1)[1]) for event in events if "data: " in event]
    kinds = [(item["type"], item.get("delta", {}).get("type")) for item in data]
    first = kinds.index(("content_block_start", None))
    assert data[first]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    signature = kinds.index(("content_block_delta", "signature_delta"))
    assert kinds[signature + 1] == ("content_block_stop", None)
    assert "".join(item["delta"].get("thinking", "") for item in data if item["type"] == "content_block_delta") == (
        "Short."
    )


def test_an_answer_the_template_did_not_open_in_reasoning_is_content(proxy, fake_tgi):
    """Where the answer starts comes from the rendered prompt (vLLM #53284): Qwen3's template
    leaves <think> to the model, so an answer with no think tags is all content."""
    fake_tgi.reply = "4"
    message = openai_client(proxy).chat.completions.create(model="m", messages=ASK).choices[0].message
    assert message.content == "4" and getattr(message, "reasoning_content", None) is None


@pytest.mark.parametrize("stream", [False, True])
def test_codex_gets_sealed_reasoning_items_and_replays_them_without_a_store(proxy, fake_tgi, stream):
    """Codex asks for `reasoning.encrypted_content` with `store: false`, and sends the items back."""
    client = openai_client(proxy)
    tool = {"type": "function", **WEATHER["function"]}
    request = {"model": "m", "tools": [tool], "store": False, "include": ["reasoning.encrypted_content"]}

    def respond(given: list) -> Any:
        if not stream:
            return client.responses.create(input=given, **request)
        events = list(client.responses.create(input=given, stream=True, **request))
        kinds = [event.type for event in events]
        assert "response.reasoning_text.delta" in kinds and kinds[-1] == "response.completed"
        return events[-1].response

    fake_tgi.reply = ANSWER
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    response = respond(asked)
    reasoning, message, call = response.output
    assert (reasoning.type, message.type, call.type) == ("reasoning", "message", "function_call")
    assert reasoning.content[0].text == THOUGHT and reasoning.encrypted_content

    def replay(item: dict) -> list:
        output = {"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}
        return [*asked, item, call.model_dump(exclude_none=True), output]

    fake_tgi.reply = "<think>\nMild.\n</think>\n\n18 C."
    respond(replay(reasoning.model_dump(exclude_none=True)))
    assert f"<think>\n{THOUGHT}\n</think>" in fake_tgi.last.json()["inputs"]
    # A sealed item that was altered is left out, never trusted.
    forged = {**reasoning.model_dump(exclude_none=True), "encrypted_content": reasoning.encrypted_content[:-4] + "AAAA"}
    respond(replay(forged))
    assert THOUGHT not in fake_tgi.last.json()["inputs"]


THINKING_OFF = "<|im_start|>assistant\n<think>\n\n</think>\n\n"  # what Qwen3's template writes


def test_each_fronts_effort_switches_the_templates_thinking(proxy, fake_tgi):
    fake_tgi.reply = "4"
    chat = openai_client(proxy).chat.completions
    chat.create(model="m", messages=ASK, reasoning_effort="none")
    assert fake_tgi.last.json()["inputs"].endswith(THINKING_OFF)
    chat.create(model="m", messages=ASK, reasoning_effort="high")
    assert fake_tgi.last.json()["inputs"].endswith("<|im_start|>assistant\n")
    claude = anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0)
    claude.messages.create(model="m", max_tokens=64, messages=ASK, thinking={"type": "disabled"})
    assert fake_tgi.last.json()["inputs"].endswith(THINKING_OFF)
    claude.messages.create(model="m", max_tokens=64, messages=ASK, thinking={"type": "enabled", "budget_tokens": 2048})
    assert fake_tgi.last.json()["inputs"].endswith("<|im_start|>assistant\n")
    openai_client(proxy).responses.create(model="m", input="2+2?", reasoning={"effort": "none"})
    assert fake_tgi.last.json()["inputs"].endswith(THINKING_OFF)
    refused = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": "m", "messages": ASK, "reasoning_effort": "max"},
        headers=auth(),
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "reasoning_effort"


def test_a_route_turns_thinking_off_and_a_requests_effort_turns_it_back_on(start_proxy, fake_tgi, tmp_path):
    route = {**ROUTES["/chat/completions"], "chat_template_kwargs": {"enable_thinking": False}}
    proxy = template_proxy(
        start_proxy, fake_tgi, tmp_path, QWEN3, {"/chat/completions": route}, "Qwen3", eos_token="<|im_end|>"
    )
    fake_tgi.reply = "4"
    message = openai_client(proxy).chat.completions.create(model="m", messages=ASK).choices[0].message
    assert fake_tgi.last.json()["inputs"].endswith(THINKING_OFF)
    assert message.content == "4" and getattr(message, "reasoning_content", None) is None
    openai_client(proxy).chat.completions.create(model="m", messages=ASK, reasoning_effort="low")
    assert fake_tgi.last.json()["inputs"].endswith("<|im_start|>assistant\n")


GPT_OSS = DATA / "reasoning-templates" / "openai-gpt-oss-120b.jinja"
HARMONY = {"<|start|>", "<|channel|>", "<|message|>", "<|constrain|>", "<|end|>", "<|call|>", "<|return|>"}
HARMONY_CALL = (
    "<|channel|>analysis<|message|>The user wants the weather; call get_weather.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
    '<|message|>{"city":"Paris"}<|call|>'
)


@pytest.mark.parametrize("stream", [False, True])
def test_a_gpt_oss_harmony_answer_read_from_tgis_tokens_gives_reasoning_text_and_a_call(
    start_proxy, fake_tgi, tmp_path, stream
):
    # On TGI harmony's markers are special tokens: generated_text leaves them out, the tokens keep them.
    fake_tgi.special_tokens |= HARMONY
    routes = fronts_onto_tgi(prompter="chat_template", template="GptOss", tool_parser="auto")
    proxy = template_proxy(start_proxy, fake_tgi, tmp_path, GPT_OSS, routes, "GptOss", eos_token="<|return|>")
    assert "auto picked gpt_oss" in proxy.log()
    fake_tgi.reply = HARMONY_CALL
    content, calls, finish_reason, reasoning = ask(proxy, stream)
    assert reasoning == "The user wants the weather; call get_weather."
    assert ([(name, arguments) for name, arguments in calls], finish_reason) == (
        [("get_weather", {"city": "Paris"})],
        "tool_calls",
    )
    assert not (content or "").strip()
    fake_tgi.reply = (
        "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>commentary<|message|>Checking."
        "<|end|><|start|>assistant<|channel|>final<|message|>It is 4.<|return|>"
    )
    content, calls, finish_reason, reasoning = ask(proxy, stream)
    assert (reasoning, content, calls, finish_reason) == ("Easy.", "Checking.\n\nIt is 4.", [], "stop")
    # The system prompt's stop strings leave <|end|> to the turn it belongs to.
    assert "<|end|>" not in fake_tgi.last.json()["parameters"].get("stop", [])


def ask(proxy, stream: bool) -> tuple[str | None, list, str, str | None]:
    """(content, [(name, arguments)], finish_reason, reasoning) of a chat request with WEATHER."""
    kwargs = {"model": "m", "messages": ASK, "tools": [WEATHER]}
    if not stream:
        choice = openai_client(proxy).chat.completions.create(**kwargs).choices[0]
        calls = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []]
        return choice.message.content, calls, choice.finish_reason, getattr(choice.message, "reasoning_content", None)
    chunks = list(openai_client(proxy).chat.completions.create(**kwargs, stream=True))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    content = "".join(delta.content or "" for delta in deltas) or None
    reasoning = "".join(getattr(delta, "reasoning_content", None) or "" for delta in deltas) or None
    names = {call.index: call.function.name for delta in deltas for call in delta.tool_calls or [] if call.id}
    arguments = {index: "" for index in names}
    for delta in deltas:
        for call in delta.tool_calls or []:
            arguments[call.index] += call.function.arguments or ""
    calls = [(names[index], json.loads(arguments[index])) for index in sorted(names)]
    return content, calls, chunks[-1].choices[0].finish_reason, reasoning
