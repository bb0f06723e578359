"""OpenAI <-> TGI translation, through the proxy, with the real openai client (strict validation)."""

from __future__ import annotations

import openai
import pytest
import yaml

from conftest import GRAMMAR_CALL, REPO, TGI_FAILURES, WEATHER, proxy_config
from support.fake_tgi import tokenize
from support.routes import LLAMA2_PROMPT, TRANSLATED, client

SYSTEM_AND_HISTORY = [
    {"role": "system", "content": "You are Bob."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi! How can I help?"},
    {"role": "user", "content": "Tell me a joke"},
]
# An endpoint's `defaults`, each named as TGI's parameter.
TUNED_DEFAULTS = {
    "temperature": 0.5,
    "top_p": 0.95,
    "top_k": 10,
    "typical_p": 0.95,
    "repetition_penalty": 1.03,
    "max_new_tokens": 7,
}


@pytest.fixture
def proxy(start_proxy, fake_tgi):
    config = proxy_config(
        {
            "tgi": {"url": fake_tgi.url, "mapping": TRANSLATED},
            "tuned": {
                "url": fake_tgi.url,
                "mapping": {
                    "/chat/completions": {
                        **TRANSLATED["/chat/completions"],
                        "defaults": TUNED_DEFAULTS,
                    }
                },
            },
            "llama3": {
                "url": fake_tgi.url,
                "mapping": {
                    "/chat/completions": {
                        **TRANSLATED["/chat/completions"],
                        "prompter": "chat_template",
                        "template": "llama3",
                    }
                },
            },
            "gemma": {
                "url": fake_tgi.url,
                "mapping": {
                    "/chat/completions": {
                        **TRANSLATED["/chat/completions"],
                        "prompter": "chat_template",
                        "template": "gemma",
                    }
                },
            },
        }
    )
    return start_proxy(config)


def sent_parameters(fake_tgi) -> dict:
    return fake_tgi.last.json()["parameters"]


def test_chat_greedy_with_history_and_stop(proxy, fake_tgi):
    fake_tgi.reply = "Why did the chicken cross the road? END To get to the other side."
    answer = client(proxy).chat.completions.create(
        model="llama-2-7b-chat",
        messages=SYSTEM_AND_HISTORY,
        temperature=0,
        top_p=1,
        frequency_penalty=0,
        presence_penalty=0,
        stop="END",
        max_tokens=50,
    )
    received = fake_tgi.last.json()
    assert received["inputs"] == LLAMA2_PROMPT
    assert received["parameters"] == {
        "details": True,
        "do_sample": False,
        "max_new_tokens": 50,
        "stop": ["END", "[INST]"],
    }
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Why did the chicken cross the road? "
    assert choice.finish_reason == "stop"
    assert answer.model == "llama-2-7b-chat"
    assert answer.object == "chat.completion"
    assert answer.id.startswith("chatcmpl-")
    assert answer.usage.prompt_tokens == len(tokenize(LLAMA2_PROMPT)) + 1
    assert answer.usage.completion_tokens == len(tokenize("Why did the chicken cross the road? END"))
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_ids_are_unique(proxy, fake_tgi):
    chat = client(proxy).chat.completions
    ids = {chat.create(model="m", messages=[{"role": "user", "content": "hi"}]).id for _ in range(3)}
    assert len(ids) == 3


def test_completion(proxy, fake_tgi):
    fake_tgi.reply = " jumps over the lazy dog"
    answer = client(proxy).completions.create(
        model="llama-2-7b", prompt="The quick brown fox", temperature=0, max_tokens=3
    )
    assert fake_tgi.last.json() == {
        "inputs": "The quick brown fox",
        "parameters": {"details": True, "do_sample": False, "max_new_tokens": 3},
    }
    assert answer.object == "text_completion"
    assert answer.id.startswith("cmpl-")
    assert answer.choices[0].text == " jumps over the"
    assert answer.choices[0].finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 3)


def test_completion_echo_and_eos(proxy, fake_tgi):
    fake_tgi.reply = " done."
    answer = client(proxy).completions.create(model="m", prompt="All", echo=True)
    assert answer.choices[0].text == "All done."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.completion_tokens == 2  # " done." and the EOS token


def test_openai_default_sampling(proxy, fake_tgi):
    client(proxy).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert sent_parameters(fake_tgi) == {"details": True, "do_sample": True, "temperature": 1.0, "stop": ["[INST]"]}


def test_endpoint_defaults_fill_what_the_client_left_unset(proxy, fake_tgi):
    tuned = client(proxy, "tuned").chat.completions
    tuned.create(model="m", messages=[{"role": "user", "content": "hi"}])
    # Every default is sent as TGI's parameter of the same name.
    assert sent_parameters(fake_tgi) == {"details": True, "do_sample": True, **TUNED_DEFAULTS, "stop": ["[INST]"]}
    tuned.create(model="m", messages=[{"role": "user", "content": "hi"}], temperature=0.8, top_p=1, max_tokens=3)
    parameters = sent_parameters(fake_tgi)
    assert (parameters["temperature"], parameters["max_new_tokens"]) == (0.8, 3)
    assert "top_p" not in parameters
    tuned.create(model="m", messages=[{"role": "user", "content": "hi"}], top_p=0)
    assert sent_parameters(fake_tgi)["do_sample"] is False
    assert not {"temperature", "top_p", "top_k", "typical_p"} & set(sent_parameters(fake_tgi))


def test_penalties_seed_and_tgi_extensions(proxy, fake_tgi):
    client(proxy).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.7,
        top_p=0.9,
        frequency_penalty=0.3,
        presence_penalty=0.5,
        seed=42,
        max_completion_tokens=9,
        user="someone",
        logit_bias={"50256": -100},
        extra_body={"top_k": 5, "typical_p": 0.9, "watermark": True, "unknown_field": 1},
    )
    parameters = sent_parameters(fake_tgi)
    assert parameters == {
        "details": True,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 5,
        "typical_p": 0.9,
        "frequency_penalty": 0.3,
        "repetition_penalty": 1.05,
        "watermark": True,
        "max_new_tokens": 9,
        "seed": 42,
        "stop": ["[INST]"],
    }


def test_extreme_legal_values_are_accepted_by_tgi(proxy, fake_tgi):
    chat = client(proxy).chat.completions
    for temperature, top_p, penalty in ((2, 1, 2), (0, 0, -2), (1, 0.5, 0), (0.01, 1, -2)):
        answer = chat.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            temperature=temperature,
            top_p=top_p,
            frequency_penalty=penalty,
            presence_penalty=penalty,
        )
        assert answer.choices[0].message.content


def test_n_choices_are_parallel_calls_with_their_own_seed(proxy, fake_tgi):
    answer = client(proxy).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], n=3, seed=7, temperature=0.9
    )
    assert [choice.index for choice in answer.choices] == [0, 1, 2]
    calls = fake_tgi.received[-3:]
    assert sorted(call.json()["parameters"]["seed"] for call in calls) == [7, 8, 9]
    one = len(tokenize(fake_tgi.reply)) + 1
    assert answer.usage.completion_tokens == 3 * one
    # The prompt is counted once, not once per choice.
    assert answer.usage.prompt_tokens == len(tokenize(calls[0].json()["inputs"])) + 1


def test_completion_prompt_list(proxy, fake_tgi):
    answer = client(proxy).completions.create(model="m", prompt=["one two", "three"], max_tokens=2, temperature=0)
    assert [choice.index for choice in answer.choices] == [0, 1]
    assert sorted(call.json()["inputs"] for call in fake_tgi.received[-2:]) == ["one two", "three"]
    assert answer.usage.prompt_tokens == 3 + 2  # each prompt with its BOS
    assert answer.usage.completion_tokens == 4


def test_stops_beyond_tgis_limit_are_enforced_by_the_proxy(proxy, fake_tgi):
    fake_tgi.reply = "alpha beta gamma delta epsilon zeta"
    answer = client(proxy).completions.create(model="m", prompt="x", stop=["s1", "s2", "s3", "s4", "gamma"])
    assert sent_parameters(fake_tgi)["stop"] == ["s1", "s2", "s3", "s4"]
    assert answer.choices[0].text == "alpha beta "
    assert answer.choices[0].finish_reason == "stop"


def test_the_stop_limit_is_the_one_tgis_info_says(start_proxy, fake_tgi):
    fake_tgi.max_stop_sequences = 2  # a TGI started with --max-stop-sequences 2
    proxy = start_proxy(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": TRANSLATED}}))
    fake_tgi.reply = "alpha beta gamma delta"
    answer = client(proxy).completions.create(model="m", prompt="x", stop=["s1", "s2", "gamma"])
    assert sent_parameters(fake_tgi)["stop"] == ["s1", "s2"]
    assert answer.choices[0].text == "alpha beta "


def test_best_of(proxy, fake_tgi):
    completions = client(proxy).completions
    completions.create(model="m", prompt="x", best_of=2, temperature=0.7)
    assert sent_parameters(fake_tgi)["best_of"] == 2
    for bad in ({"temperature": 0}, {"temperature": 0.7, "seed": 1}):
        with pytest.raises(openai.BadRequestError) as refused:
            completions.create(model="m", prompt="x", best_of=2, **bad)
        assert refused.value.body["param"] == "best_of"


@pytest.mark.parametrize(
    "bad",
    [
        {"seed": -1},
        {"temperature": 3},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"n": 100},
        {"stop": [1]},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"response_format": {"type": "json_object"}},
    ],
)
def test_requests_without_meaning_for_tgi_are_400(proxy, fake_tgi, bad):
    with pytest.raises(openai.BadRequestError):
        client(proxy).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], **bad)
    assert fake_tgi.received == []


def test_json_schema_becomes_a_grammar(proxy, fake_tgi):
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    fake_tgi.reply = '{"name": "Ada"}'  # what the grammar allows
    answer = client(proxy).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    assert answer.choices[0].message.content == '{"name": "Ada"}'
    assert sent_parameters(fake_tgi)["grammar"] == {"type": "json", "value": schema}


@pytest.mark.parametrize(
    "schema",
    [{"type": "object"}, {"type": "array", "items": {"type": "string"}}, {"$ref": "#/$defs/P", "$defs": {"P": {}}}],
)
def test_a_schema_tgi_would_refuse_is_a_400_naming_response_format(proxy, fake_tgi, schema):
    with pytest.raises(openai.BadRequestError) as refused:
        client(proxy).chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )
    assert refused.value.body["param"] == "response_format"
    assert fake_tgi.received == []


@pytest.mark.parametrize(("failure", "exception"), TGI_FAILURES)
def test_tgi_errors_become_openai_errors(proxy, fake_tgi, failure, exception):
    fake_tgi.fail_with = failure
    with pytest.raises(exception) as raised:
        client(proxy).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == failure[0]
    assert raised.value.body["message"] == failure[1]
    assert raised.value.body["code"] == failure[2]


def test_tgi_validation_error_is_a_400_invalid_request_with_tgis_message(proxy, fake_tgi):
    with pytest.raises(openai.BadRequestError) as raised:
        client(proxy).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], temperature=0.7, extra_body={"truncate": 5000}
        )
    assert raised.value.body["message"] == (
        "Input validation error: `truncate` must be strictly positive and less than 4095. Given: 5000"
    )
    assert raised.value.body["code"] == "validation"
    assert raised.value.body["type"] == "invalid_request_error"


def test_model_chat_template_drops_bos_and_stops_at_end_of_turn(proxy, fake_tgi):
    client(proxy, "llama3").chat.completions.create(model="m", messages=SYSTEM_AND_HISTORY[:2])
    received = fake_tgi.last.json()
    assert received["inputs"].startswith("<|start_header_id|>system")
    assert received["parameters"]["stop"] == ["<|eot_id|>"]


def test_template_exception_is_a_400(proxy, fake_tgi):
    with pytest.raises(openai.BadRequestError) as raised:
        client(proxy, "gemma").chat.completions.create(model="m", messages=SYSTEM_AND_HISTORY)
    assert "System role not supported" in raised.value.body["message"]
    assert fake_tgi.received == []


def test_content_parts(proxy, fake_tgi):
    chat = client(proxy).chat.completions
    chat.create(model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "part one"}]}])
    assert "part one [/INST]" in fake_tgi.last.json()["inputs"]
    # An image, on a route whose model reads text only, is a placeholder (a 400 would stall an agent).
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    chat.create(model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}])
    assert "What is it?\n[image omitted: this model reads text only] [/INST]" in fake_tgi.last.json()["inputs"]


def test_the_config_templates_examples_work(start_proxy, fake_tgi):
    config = yaml.safe_load((REPO / "config.template.yaml").read_text())
    config["system"].update(host="127.0.0.1", port=0)
    for name, target in config["targets"].items():
        if name != "default":
            target["url"] = fake_tgi.url
    proxy = start_proxy(config)
    prompts = {}
    for target in ("tgi", "tgi-falcon", "tgi-llama3"):
        answer = client(proxy, target).chat.completions.create(model="m", messages=SYSTEM_AND_HISTORY, temperature=0)
        assert answer.choices[0].message.content == fake_tgi.reply
        prompts[target] = fake_tgi.last.json()["inputs"]
    assert prompts["tgi"] == prompts["tgi-llama3"]  # the model's own template, as the README shows
    assert prompts["tgi-falcon"] == (
        "You are Bob.>>>QUESTION<<<Hello>>>ANSWER<<<Hi! How can I help?>>>QUESTION<<<Tell me a joke>>>ANSWER<<<"
    )
    assert prompts["tgi-llama3"].startswith("<|start_header_id|>system<|end_header_id|>\n\nYou are Bob.<|eot_id|>")
    completion = client(proxy, "tgi").completions.create(model="m", prompt="Once", max_tokens=2, temperature=0)
    assert completion.choices[0].text == "Hello! I"
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["function"]["parameters"]}}
    fake_tgi.reply = GRAMMAR_CALL  # what TGI's grammar allows
    answer = client(proxy, "tgi-llama3").chat.completions.create(
        model="m", messages=SYSTEM_AND_HISTORY, tools=[weather]
    )
    assert answer.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert "grammar" in fake_tgi.last.json()["parameters"]


def test_without_the_accelerators(start_proxy, fake_tgi):
    """The stdlib event loop and JSON, as without requirements-fast.txt."""
    proxy = start_proxy(
        proxy_config({"tgi": {"url": fake_tgi.url, "mapping": TRANSLATED}}), env={"MOOLTIPROXY_PURE_PYTHON": "1"}
    )
    assert "event loop: asyncio, JSON: json" in proxy.log()
    chat = client(proxy).chat.completions
    answer = chat.create(model="m", messages=SYSTEM_AND_HISTORY, temperature=0, n=2)
    assert [choice.message.content for choice in answer.choices] == [fake_tgi.reply] * 2
    streamed = chat.create(model="m", messages=SYSTEM_AND_HISTORY, temperature=0, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == fake_tgi.reply
    with pytest.raises(openai.BadRequestError):
        chat.create(model="m", messages=SYSTEM_AND_HISTORY, seed=-1)
