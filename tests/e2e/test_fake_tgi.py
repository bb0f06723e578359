"""The fake TGI itself: it must refuse exactly what TGI refuses, or the translation tests prove nothing."""

from __future__ import annotations

import json

import httpx
import pytest

VALID = {"inputs": "Hello there", "parameters": {"max_new_tokens": 4}}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"temperature": 0}, "`temperature` must be strictly positive"),
        ({"temperature": -1}, "`temperature` must be strictly positive"),
        ({"repetition_penalty": 0}, "`repetition_penalty` must be strictly positive"),
        ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"top_p": 0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
        ({"top_k": 0}, "`top_k` must be strictly positive"),
        ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
        ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
        ({"best_of": 2, "do_sample": True, "seed": 1}, "`seed` must not be set when `best_of` > 1"),
        ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
        ({"max_new_tokens": 5000}, "`inputs` tokens + `max_new_tokens` must be <= 4096"),
        ({"truncate": 0}, "`truncate` must be strictly positive and less than 4095"),
    ],
)
def test_generate_rejects_what_tgi_rejects(fake_tgi, parameters, message):
    answer = httpx.post(f"{fake_tgi.url}/generate", json={"inputs": "Hello", "parameters": parameters})
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error_type"] == "validation"
    assert answer.json()["error"].startswith("Input validation error: " + message)


def test_empty_inputs_and_bodies_that_do_not_deserialize(fake_tgi):
    assert httpx.post(f"{fake_tgi.url}/generate", json={"inputs": ""}).json()["error"].endswith("cannot be empty")
    for body in (
        {"parameters": {}},
        {"inputs": "x", "parameters": {"seed": -1}},
        {"inputs": "x", "parameters": {"temperature": "hot"}},
        {"inputs": 3},
    ):
        answer = httpx.post(f"{fake_tgi.url}/generate", json=body)
        assert answer.status_code == 422
        assert answer.headers["content-type"].startswith("text/plain")
    assert (
        httpx.post(f"{fake_tgi.url}/generate", content=b"{", headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    assert httpx.post(f"{fake_tgi.url}/generate", content=b"{}").status_code == 415


def test_generate_answer_shape(fake_tgi):
    fake_tgi.reply = "one two"
    plain = httpx.post(f"{fake_tgi.url}/generate", json=VALID)
    assert plain.json() == {"generated_text": "one two"}
    assert plain.headers["x-prompt-tokens"] == "3"
    assert plain.headers["x-generated-tokens"] == "3"
    detailed = httpx.post(f"{fake_tgi.url}/generate", json={"inputs": "x", "parameters": {"details": True}}).json()
    assert detailed["details"]["finish_reason"] == "eos_token"
    assert detailed["details"]["tokens"][-1]["special"] is True
    assert "</s>" not in detailed["generated_text"]
    stopped = httpx.post(
        f"{fake_tgi.url}/generate", json={"inputs": "x", "parameters": {"details": True, "stop": ["two"]}}
    )
    assert stopped.json()["generated_text"] == "one two"
    assert stopped.json()["details"]["finish_reason"] == "stop_sequence"


def test_stream_framing_and_errors_inside_the_stream(fake_tgi):
    fake_tgi.reply = "a b"
    answer = httpx.post(f"{fake_tgi.url}/generate_stream", json={"inputs": "x", "parameters": {"details": True}})
    assert answer.headers["content-type"] == "text/event-stream"
    events = [json.loads(chunk[5:]) for chunk in answer.text.split("\n\n") if chunk]
    assert [event["index"] for event in events] == [1, 2, 3]
    assert events[-1]["token"]["special"] is True
    assert events[-1]["generated_text"] == "a b"
    assert events[-1]["details"]["input_length"] == 2
    assert events[0]["generated_text"] is None
    refused = httpx.post(
        f"{fake_tgi.url}/generate_stream", json={"inputs": "x", "parameters": {"best_of": 2, "do_sample": True}}
    )
    assert refused.status_code == 200
    assert refused.text.startswith('data:{"error": "Input validation error: `best_of` != 1')


# TGI's grammar rules (router/src/validation.rs): a JSON schema must pass the draft 2020-12
# meta-schema and have a top-level `properties`; the grammar's type is one serde knows.
@pytest.mark.parametrize(
    ("grammar", "status", "message"),
    [
        ({"type": "json", "value": {"type": "object"}}, 422, "Grammar must have a 'properties' field"),
        ({"type": "json", "value": {"oneOf": [{"type": "object"}]}}, 422, "Grammar must have a 'properties' field"),
        ({"type": "json_object", "value": {"type": "array"}}, 422, "Grammar must have a 'properties' field"),
        ({"type": "json", "value": '{"type": "object"}'}, 422, "Grammar must have a 'properties' field"),
        ({"type": "json_schema", "value": {"schema": {"type": "object"}}}, 422, "Grammar must have a 'properties'"),
        ({"type": "json", "value": {"properties": {}, "type": "nonsense"}}, 422, "grammar is not valid"),
        ({"type": "yaml", "value": "x"}, 422, "unknown variant"),
        ({"type": "json_schema", "value": {"name": "x"}}, 422, "missing field `schema`"),
    ],
)
def test_grammars_tgi_refuses(fake_tgi, grammar, status, message):
    answer = httpx.post(f"{fake_tgi.url}/generate", json={"inputs": "x", "parameters": {"grammar": grammar}})
    assert answer.status_code == status
    assert message in answer.text
    streamed = httpx.post(f"{fake_tgi.url}/generate_stream", json={"inputs": "x", "parameters": {"grammar": grammar}})
    if "unknown variant" in message or "missing field" in message:
        assert streamed.status_code == 422  # serde refuses the body before the stream opens
    else:
        assert streamed.status_code == 200 and message in streamed.text


def test_a_grammar_tgi_takes_constrains_the_fake_models_reply(fake_tgi):
    grammar = {"type": "json", "value": {"properties": {"city": {"type": "string"}}, "required": ["city"]}}
    fake_tgi.reply = '{"city": "Paris"}'
    answer = httpx.post(f"{fake_tgi.url}/generate", json={"inputs": "x", "parameters": {"grammar": grammar}})
    assert answer.json() == {"generated_text": '{"city": "Paris"}'}
    # A reply no model under that grammar could write is the test's mistake, said loudly.
    fake_tgi.reply = "Paris"
    answer = httpx.post(f"{fake_tgi.url}/generate", json={"inputs": "x", "parameters": {"grammar": grammar}})
    assert answer.status_code == 500 and "does not follow the request's grammar" in answer.text


def test_the_chat_api_validates_as_generate_does_with_errors_inside_its_stream(fake_tgi):
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}
    refused = httpx.post(f"{fake_tgi.url}/v1/chat/completions", json=chat)
    assert refused.status_code == 422
    assert "`inputs` tokens + `max_new_tokens` must be <= 4096" in refused.json()["error"]
    streamed = httpx.post(f"{fake_tgi.url}/v1/chat/completions", json={**chat, "stream": True})
    assert streamed.status_code == 200
    error, done = [event for event in streamed.text.split("\n\n") if event]
    assert json.loads(error.removeprefix("data:"))["error"]["http_status_code"] == 422
    assert done == "data:[DONE]"


def test_chat_tokenize_templates_then_tokenizes(fake_tgi):
    answer = httpx.post(f"{fake_tgi.url}/chat_tokenize", json={"messages": [{"role": "user", "content": "a b"}]})
    body = answer.json()
    assert body["templated_text"] == "user: a b\nassistant:"
    assert len(body["tokenize_response"]) == 1 + 4  # BOS, then one token a word
