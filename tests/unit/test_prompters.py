"""Prompters: golden strings for the original formats, and transformers' rendering of real templates:
32 with string content, 15 with content sent as lists of parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mooltiproxy.backends.tgi.prompters import chat_template, fromTemplate, llama2_chat
from mooltiproxy.config.loader import load_config
from mooltiproxy.config.settings import Endpoint
from mooltiproxy.config.template_entries import builtin_templates, template_entry_validator
from mooltiproxy.config.templates import PromptTemplate, compile_template, stop_strings_of
from mooltiproxy.core.errors import ConfigError, ProxyError
from mooltiproxy.translation.prompting import DEFAULT_SYSTEM_PROMPT

from conftest import DATA

HISTORY = [
    {"role": "system", "content": "You are Bob."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi! How can I help?"},
    {"role": "user", "content": "Tell me a joke"},
]
HUMAN_RESPONSE = PromptTemplate(
    name="HumanResponse",
    markers={"preprompt": "", "start": "", "system": "", "user": "\n### HUMAN:\n", "assistant": "\n### RESPONSE:\n"},
)
CASES = json.loads((DATA / "chat-templates.json").read_text())
# Made by tests/data/render_with_transformers.py.
PARTS_CASES = json.loads((DATA / "chat-templates-parts.json").read_text())


def endpoint(template: PromptTemplate | None = None, **settings) -> Endpoint:
    return Endpoint(
        incoming_path="/chat/completions",
        upstream_path="/generate",
        template=template,
        **settings,
    )


def test_from_template_is_the_original_format():
    prompt, stops = fromTemplate(HISTORY, endpoint(HUMAN_RESPONSE))
    assert prompt == (
        "You are Bob.\n### HUMAN:\nHello\n### RESPONSE:\nHi! How can I help?"
        "\n### HUMAN:\nTell me a joke\n### RESPONSE:\n"
    )
    assert stops == ["\n### HUMAN:\n"]


def test_from_template_uses_the_default_system_prompt_and_markers():
    markers = {"preprompt": "<<", "start": ">>", "system": "[S]", "user": "[U]", "assistant": "[A]", "tool": "[T]"}
    template = PromptTemplate(name="t", markers=markers)
    messages = [
        {"role": "user", "content": "q"},
        {"role": "system", "content": "later system"},
        {"role": "tool", "content": "42"},
    ]
    prompt, _ = fromTemplate(messages, endpoint(template))
    assert prompt == f"<<{DEFAULT_SYSTEM_PROMPT}>>[U]q[S]later system[T]42[A]"
    custom, _ = fromTemplate(messages[:1], endpoint(template, system_prompt="Be brief."))
    assert custom == "<<Be brief.>>[U]q[A]"


def test_from_template_refuses_a_role_without_marker():
    with pytest.raises(ProxyError) as refused:
        fromTemplate([{"role": "tool", "content": "x"}], endpoint(HUMAN_RESPONSE))
    assert refused.value.status == 400
    assert "role 'tool'" in refused.value.message


def test_from_template_with_a_whole_jinja_template():
    source = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}<assistant>"
    template = PromptTemplate(
        name="j",
        jinja=compile_template(source),
        bos_token="<s>",
        eos_token="</s>",
        stop=stop_strings_of("</s>", source),
    )
    prompt, stops = fromTemplate(HISTORY[1:2], endpoint(template))
    assert prompt == "<user>Hello</s><assistant>"
    assert stops == ["</s>"]
    kept, _ = fromTemplate(HISTORY[1:2], endpoint(template, strip_bos=False))
    assert kept == "<s><user>Hello</s><assistant>"


def test_llama2_chat_golden_strings():
    prompt, stops = llama2_chat(HISTORY, endpoint())
    assert prompt == (
        "[INST] <<SYS>>\nYou are Bob.\n<</SYS>>\n\nHello [/INST] Hi! How can I help? </s>"
        "<s>[INST] Tell me a joke [/INST]"
    )
    assert stops == ["[INST]"]
    alone, _ = llama2_chat([{"role": "user", "content": " Hi "}], endpoint())
    assert alone == f"[INST] <<SYS>>\n{DEFAULT_SYSTEM_PROMPT}\n<</SYS>>\n\nHi [/INST]"


def test_llama2_chat_matches_the_models_own_template_without_bos():
    llama2 = builtin_templates()["llama2"]
    own = llama2.render(HISTORY)
    prompt, _ = llama2_chat(HISTORY, endpoint())
    assert own == "<s>" + prompt


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "content": "x"}],
        HISTORY[:1],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    ],
)
def test_llama2_chat_refuses_what_it_cannot_format(messages):
    with pytest.raises(ProxyError) as refused:
        llama2_chat(messages, endpoint())
    assert refused.value.status == 400


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_chat_template_renders_exactly_as_transformers(case):
    template = PromptTemplate(
        name=case["name"],
        jinja=compile_template(case["chat_template"]),
        bos_token=case["bos_token"],
        eos_token=case["eos_token"],
    )
    rendered = template.render(case["messages"], add_generation_prompt=case["add_generation_prompt"])
    assert rendered == case["expected"]


@pytest.mark.parametrize("name", ["llama3", "llama2", "mistral", "zephyr", "chatml", "gemma"])
def test_builtin_templates_drop_the_bos_and_stop_at_end_of_turn(name):
    template = builtin_templates()[name]
    messages = [{"role": "user", "content": "Hi"}]
    prompt, stops = chat_template(messages, endpoint(template))
    rendered = template.render(messages)
    assert rendered.endswith(prompt)
    assert not template.bos_token or not prompt.startswith(template.bos_token)
    assert template.eos_token in stops


def test_llama3_prompt_and_stops():
    prompt, stops = chat_template(HISTORY[:2], endpoint(builtin_templates()["llama3"]))
    assert prompt == (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are Bob.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert stops == ["<|eot_id|>"]


def test_a_templates_own_exception_is_a_400_with_its_message():
    with pytest.raises(ProxyError) as refused:
        chat_template(HISTORY, endpoint(builtin_templates()["gemma"]))
    assert refused.value.status == 400
    assert "System role not supported" in refused.value.message


def test_content_parts_and_bad_parts():
    parts = [{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}]
    prompt, _ = fromTemplate(parts, endpoint(HUMAN_RESPONSE))
    assert prompt.endswith("\n### HUMAN:\none\ntwo\n### RESPONSE:\n")
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]
    with pytest.raises(ProxyError) as refused:
        fromTemplate(image, endpoint(HUMAN_RESPONSE))
    assert refused.value.status == 400
    assert "image_url" in refused.value.message


def test_sandbox_blocks_unsafe_templates():
    template = PromptTemplate(name="evil", jinja=compile_template("{{ messages.__class__.__mro__ }}"))
    with pytest.raises(ProxyError) as refused:
        template.render([{"role": "user", "content": "x"}])
    assert refused.value.status == 400


def test_templates_from_a_tokenizer_config_and_inline(tmp_path):
    llama3 = next(case for case in CASES if case["name"] == "meta-llama/Meta-Llama-3-8B-Instruct")
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": {"content": "<|begin_of_text|>", "lstrip": False},
                "eos_token": "<|eot_id|>",
                "chat_template": [
                    {"name": "tool_use", "template": "unused"},
                    {"name": "default", "template": llama3["chat_template"]},
                ],
            }
        )
    )
    (tmp_path / "config.yaml").write_text(
        "templates:\n"
        "  FromHub:\n    tokenizer_config: tokenizer_config.json\n"
        '  Inline:\n    chat_template: "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}[assistant]"\n'
        "    stop: ['[user]']\n"
        "targets:\n  default: t\n  t:\n    url: http://127.0.0.1:1\n    mapping:\n"
        "      /hub: {path: /generate, in: chatReqOpenAItoTGI, out: chatAnsTGItoOpenAI, prompter: chat_template,"
        " template: FromHub}\n"
        "      /inline: {path: /generate, in: chatReqOpenAItoTGI, out: chatAnsTGItoOpenAI, prompter: fromTemplate,"
        " template: Inline}\n"
    )
    config = load_config(tmp_path / "config.yaml", environ={})
    hub = config.targets["t"].endpoints["/hub"]
    prompt, stops = hub.prompter(llama3["messages"], hub, None, {})
    assert "<|begin_of_text|>" + prompt == llama3["expected"]
    assert stops == ["<|eot_id|>"]
    inline = config.targets["t"].endpoints["/inline"]
    assert inline.prompter(HISTORY[1:2], inline, None, {}) == ("[user]Hello[assistant]", ["[user]"])


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("{chat_template: '{% for %}'}", "templates.Bad.chat_template: Jinja syntax error on line 1"),
        ("{tokenizer_config: missing.json}", "templates.Bad.tokenizer_config: cannot read"),
        ("{jinja: x, user: y}", "templates.Bad: role markers (user) cannot be mixed with a Jinja template"),
    ],
)
def test_template_entry_errors(tmp_path, entry, problem):
    (tmp_path / "config.yaml").write_text(
        f"templates:\n  Bad: {entry}\n"
        "targets:\n  default: t\n  t:\n    url: http://127.0.0.1:1\n    mapping:\n      /x:\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path / "config.yaml", environ={})
    assert any(line.startswith(problem) for line in refused.value.problems), refused.value.problems


def entry_template(tmp_path: Path, name: str = "T", **entry) -> PromptTemplate:
    return PromptTemplate(name=name, **template_entry_validator(tmp_path)(entry))


@pytest.mark.parametrize("case", PARTS_CASES, ids=[case["name"] for case in PARTS_CASES])
def test_content_parts_reach_the_template_as_transformers_passes_them(case, tmp_path):
    # A template that loops over a message's content gets the parts themselves; one that reads
    # content as a string gets them joined with newlines.
    template = entry_template(
        tmp_path,
        case["name"],
        chat_template=case["chat_template"],
        bos_token=case["bos_token"],
        eos_token=case["eos_token"],
    )
    assert template.content_parts is case["content_parts"]
    prompt, _ = chat_template(case["messages"], endpoint(template, strip_bos=False))
    assert prompt == case["expected"]


def test_content_format_can_be_forced(tmp_path):
    gemma3 = next(case for case in PARTS_CASES if case["name"] == "google-gemma-3-27b-it")
    forced = entry_template(tmp_path, chat_template=gemma3["chat_template"], content_format="string")
    prompt, _ = chat_template(gemma3["messages"], endpoint(forced))
    assert "Describe the sea\n in two parts." in prompt  # joined, where the parts would be concatenated
    with pytest.raises(Exception, match="expected one of auto, string, openai"):
        entry_template(tmp_path, chat_template="x", content_format="list")


def test_templates_see_what_transformers_gives_them(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": {"content": "</s>"},
                "unk_token": "<unk>",
                "pad_token": None,
                "additional_special_tokens": ["<tool>", {"content": "<img>"}],
                "chat_template": "from the config, overridden by chat_template.jinja",
            }
        )
    )
    (tmp_path / "chat_template.jinja").write_text(
        "{{ tools is none }}|{{ documents is none }}|{{ unk_token }}|{{ additional_special_tokens | join(',') }}|"
        "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    )
    template = entry_template(tmp_path, tokenizer_config=".")  # the model folder itself
    assert template.render([{"role": "user", "content": "hi"}]) == "True|True|<unk>|<tool>,<img>|hi"
    assert (template.bos_token, template.eos_token) == ("<s>", "</s>")


def test_named_templates_serve_requests_with_tools(tmp_path):
    (tmp_path / "chat_template.json").write_text(
        json.dumps({"chat_template": {"default": "plain", "tool_use": "tools: {{ tools | length }}"}})
    )
    template = entry_template(tmp_path, tokenizer_config=".")  # no tokenizer_config.json: the folder's files
    assert template.render([{"role": "user", "content": "hi"}]) == "plain"
    assert template.render([{"role": "user", "content": "hi"}], tools=[{"type": "function"}]) == "tools: 1"
