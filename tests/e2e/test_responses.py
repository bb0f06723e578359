"""OpenAI's Responses API (Codex's) through the chat pivot, driven by openai>=1 with strict response
validation: onto TGI's /generate (text) and onto an OpenAI-compatible server (text and tools)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import KEY, proxy_config
from support.fake_tgi import MAX_TOTAL_TOKENS, MODEL_ID
from support.routes import client, fronts_onto_tgi

ON_TGI = fronts_onto_tgi(prompter="chat_template", template="llama3")["/responses"]
ON_SERVER = {
    "path": "/v1/chat/completions",
    "in": ["responsesReqToOpenAI", "chatReqOpenAItoCompatible"],
    "out": ["chatAnsCompatibleToOpenAI", "responsesAnsOpenAIToResponses"],
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


@pytest.fixture
def proxy(start_proxy, fake_tgi):
    targets = {
        "tgi": {"url": fake_tgi.url, "mapping": {"/responses": ON_TGI}},
        "server": {"url": fake_tgi.url, "mapping": {"/responses": ON_SERVER}},
    }
    return start_proxy(proxy_config(targets, default="tgi"))


@pytest.mark.parametrize("target", ["tgi", "server"])
def test_text_streamed_equals_not_streamed(proxy, fake_tgi, target):
    fake_tgi.reply = "Paris is the capital of France."
    arguments = {
        "model": "m",
        "instructions": "Be brief.",
        "input": "What is the capital of France?",
        "max_output_tokens": 50,
    }
    response = client(proxy, target).responses.create(**arguments)
    assert response.status == "completed"
    assert response.output_text == "Paris is the capital of France."
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    events = list(client(proxy, target).responses.create(**arguments, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == response.output_text
    completed = events[-1].response
    assert completed.output_text == response.output_text
    assert completed.usage.total_tokens == response.usage.total_tokens


def test_history_items_and_a_function_call(proxy, fake_tgi):
    fake_tgi.tool_call = ("get_weather", {"city": "Paris"})
    history = [
        {"role": "developer", "content": "Use the tools."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {"type": "reasoning", "summary": []},
    ]
    response = client(proxy, "server").responses.create(model="m", input=history, tools=[WEATHER])
    (call,) = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    sent = fake_tgi.last.json()
    assert sent["messages"] == [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    # The call and its output, sent back as Codex sends its history.
    fake_tgi.tool_call = None
    fake_tgi.reply = "It is sunny."
    follow_up = [
        *history,
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"},
    ]
    answer = client(proxy, "server").responses.create(model="m", input=follow_up, tools=[WEATHER])
    assert answer.output_text == "It is sunny."
    messages = fake_tgi.last.json()["messages"]
    assert messages[2]["tool_calls"][0]["id"] == call.call_id
    assert messages[3] == {"role": "tool", "tool_call_id": call.call_id, "content": "18 C, sunny"}


def test_a_streamed_function_call(proxy, fake_tgi):
    fake_tgi.tool_call = ("get_weather", {"city": "Paris"})
    events = list(client(proxy, "server").responses.create(model="m", input="Weather?", tools=[WEATHER], stream=True))
    done = [event.item for event in events if event.type == "response.output_item.done"]
    assert [item.type for item in done] == ["function_call"]
    assert json.loads(done[0].arguments) == {"city": "Paris"}
    deltas = "".join(event.delta for event in events if event.type == "response.function_call_arguments.delta")
    assert json.loads(deltas) == {"city": "Paris"}
    assert events[-1].type == "response.completed"


def test_an_incomplete_answer(proxy, fake_tgi):
    fake_tgi.reply = "one two three four five six"
    response = client(proxy, "tgi").responses.create(model="m", input="Count", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize("stream", [False, True])
def test_previous_response_id_continues_a_kept_conversation(start_proxy, fake_tgi, stream):
    config = proxy_config(
        {"server": {"url": fake_tgi.url, "mapping": {"/responses": ON_SERVER}}},
        clients={"bob": {"envkey": "BOB_KEY"}},
    )
    proxy = start_proxy(config, env={"BOB_KEY": "bob-key-0123456789abcdefghij"})
    fake_tgi.reply = "Nice to meet you, Ada."
    first = client(proxy, "server").responses.create(model="m", input="My name is Ada.")
    fake_tgi.reply = "Your name is Ada."
    arguments = {"model": "m", "input": "What is my name?", "previous_response_id": first.id}
    if stream:
        events = list(client(proxy, "server").responses.create(**arguments, stream=True))
        second = events[-1].response
    else:
        second = client(proxy, "server").responses.create(**arguments)
    assert second.previous_response_id == first.id
    assert fake_tgi.last.json()["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    kept = client(proxy, "server").responses.retrieve(second.id)
    assert kept.output_text == "Your name is Ada."
    # Scoped to the key that made it.
    bob = OpenAI(base_url=f"{proxy.url}/v1", api_key="bob-key-0123456789abcdefghij", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(second.id)
    client(proxy, "server").responses.delete(second.id)
    with pytest.raises(openai.NotFoundError) as gone:
        client(proxy, "server").responses.retrieve(second.id)
    assert gone.value.body["message"] == f"Response with id '{second.id}' not found."
    with pytest.raises(openai.NotFoundError):
        client(proxy, "server").responses.create(model="m", input="Again", previous_response_id=second.id)


def test_store_false_keeps_nothing(proxy, fake_tgi):
    response = client(proxy, "server").responses.create(model="m", input="Hi", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client(proxy, "server").responses.retrieve(response.id)


def test_codex_asks_the_model_list_and_gets_its_own_catalog(proxy, fake_tgi):
    """Codex decodes GET /models?client_version=… as {"models": [ModelInfo]}; an OpenAI list fails its
    start with "missing field `models`" (openai/codex #35758)."""
    headers = {"Authorization": f"Bearer {KEY}", "originator": "codex_cli_rs"}
    answer = httpx.get(f"{proxy.url}/v1/models", params={"client_version": "0.64.0"}, headers=headers)
    assert answer.status_code == 200, answer.text
    (model,) = answer.json()["models"]
    assert model["slug"] == MODEL_ID and model["context_window"] == MAX_TOTAL_TOKENS  # as TGI's /info says
    assert model["apply_patch_tool_type"] == "function" and model["base_instructions"]
    # Any other client gets OpenAI's list.
    listed = httpx.get(f"{proxy.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert listed["object"] == "list" and [item["id"] for item in listed["data"]] == [MODEL_ID]
