"""Each model family's own tool-call format on TGI's /generate, with its own chat template: Llama
3.1's JSON, Mistral's [TOOL_CALLS] (Nemo's and Small 3.2's), Hermes's markers as special tokens,
Qwen3-Coder's XML, TGI's grammar on a template that knows no tools, and what `auto` picks."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import anthropic
import httpx
import pytest
import yaml

from conftest import ASK, GRAMMAR_CALL, KEY, WEATHER, auth, grammar_choices, grammar_no_tool, proxy_config, run_cli
from support.models import CALL, LLAMA31, NEMO, QWEN, QWEN3_CODER, SMALL_32, XML_CALL, model_folder
from support.tool_calls import (
    ANTHROPIC_WEATHER,
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


def mistral_proxy(start_proxy, fake_tgi, tmp_path, template: Path):
    model = model_folder(tmp_path, template, bos_token="<s>", eos_token="</s>")
    mapping = {path: {**route, "template": "Mistral", "tool_parser": "mistral"} for path, route in ROUTES.items()}
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": mapping}}, templates={"Mistral": {"tokenizer_config": model}}
    )
    return start_proxy(config)


MISTRAL_ID = re.compile(r"[A-Za-z0-9]{9}")


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
