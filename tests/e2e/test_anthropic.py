"""Anthropic's Messages API in front of TGI's /generate, driven by the anthropic SDK: mapper chains
through OpenAI chat, named stream events, errors in Anthropic's shape, and x-api-key."""

from __future__ import annotations

import anthropic
import httpx
import pytest
import yaml

from conftest import KEY, auth, proxy_config, run_cli
from support.fake_tgi import tokenize
from support.routes import fronts_onto_tgi

MESSAGES_ROUTE = fronts_onto_tgi(prompter="chat_template", template="llama3")["/messages"]
COUNT_ROUTE = {
    "path": "/tokenize",
    "in": ["countReqAnthropicToOpenAI", "tokenizeReqOpenAItoTGI"],
    "out": "countAnsTGItoAnthropic",
    "prompter": "chat_template",
    "template": "llama3",
}
HISTORY = [
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": [{"type": "text", "text": "Hi! How can I help?"}]},
    {"role": "user", "content": [{"type": "text", "text": "Tell me a joke"}]},
]


@pytest.fixture
def proxy(start_proxy, fake_tgi):
    config = proxy_config(
        {
            "tgi": {
                "url": fake_tgi.url,
                "mapping": {"/messages": MESSAGES_ROUTE, "/messages/count_tokens": COUNT_ROUTE, "/generate": None},
            }
        },
        clients={"alice": {"envkey": "ALICE_KEY", "limits": {"requests_per_minute": 1}}},
    )
    return start_proxy(config, env={"ALICE_KEY": "alice-key-0123456789abcdefghij"})


def client(proxy, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=key, max_retries=0)


def test_messages_create(proxy, fake_tgi):
    fake_tgi.reply = "Why did the chicken cross the road?"
    message = client(proxy).messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        system=[
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
            {"type": "text", "text": "You are Bob."},
        ],
        messages=HISTORY,
        metadata={"user_id": "u-1"},
        extra_body={"temperature": 0, "thinking": {"type": "adaptive"}, "context_management": {}},
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "claude-sonnet-4-5"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Why did the chicken cross the road?"
    assert message.stop_reason == "end_turn"
    sent = fake_tgi.last.json()
    # The model's own chat template, the billing line dropped so the target's prefix cache works.
    assert sent["inputs"].startswith("<|start_header_id|>system<|end_header_id|>\n\nYou are Bob.<|eot_id|>")
    assert "billing" not in sent["inputs"]
    assert sent["parameters"]["max_new_tokens"] == 64
    assert message.usage.input_tokens == len(tokenize(sent["inputs"])) + 1
    assert message.usage.output_tokens == len(tokenize(fake_tgi.reply)) + 1  # the end-of-sequence token too
    assert "x-api-key" not in {name.lower() for name in fake_tgi.last.headers}


def test_messages_stream_equals_the_complete_answer(proxy, fake_tgi):
    fake_tgi.reply = "One two three four five."
    complete = client(proxy).messages.create(model="claude-haiku-4-5", max_tokens=32, messages=HISTORY)
    events = []
    with client(proxy).messages.stream(model="claude-haiku-4-5", max_tokens=32, messages=HISTORY) as stream:
        for event in stream:
            events.append(event.type)
        final = stream.get_final_message()
    assert final.content[0].text == complete.content[0].text == "One two three four five."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == complete.usage.output_tokens
    assert final.usage.input_tokens == complete.usage.input_tokens
    assert events[0] == "message_start"
    assert events[1] == "content_block_start"
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_max_tokens_reached_is_said_as_anthropic_does(proxy, fake_tgi):
    fake_tgi.reply = "one two three four five six seven eight"
    message = client(proxy).messages.create(model="claude-haiku-4-5", max_tokens=3, messages=HISTORY[:1])
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "one two three"


def test_errors_speak_anthropics_shape(proxy, fake_tgi):
    with pytest.raises(anthropic.AuthenticationError) as refused:
        client(proxy, "wrong-key").messages.create(model="c", max_tokens=5, messages=HISTORY)
    assert refused.value.body["type"] == "error"
    assert refused.value.body["error"]["type"] == "authentication_error"
    assert refused.value.body["request_id"]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client(proxy).messages.create(
            model="c",
            max_tokens=5,
            messages=[
                {"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "http://x/y.pdf"}}]}
            ],
        )
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    assert "document blocks are not supported" in bad.value.body["error"]["message"]
    missing = httpx.post(f"{proxy.url}/v1/messages", json={"model": "c", "messages": HISTORY}, headers=auth())
    assert missing.status_code == 400
    assert missing.json()["error"]["message"] == "max_tokens: a positive integer is required"
    alice = client(proxy, "alice-key-0123456789abcdefghij")
    alice.messages.create(model="c", max_tokens=5, messages=HISTORY)
    with pytest.raises(anthropic.RateLimitError) as limited:
        alice.messages.create(model="c", max_tokens=5, messages=HISTORY)
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    assert fake_tgi.received  # the requests that got through reached the target


def test_tools_on_a_text_only_target_are_a_clear_400(proxy, fake_tgi):
    tool = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {}}}
    with pytest.raises(anthropic.BadRequestError) as refused:
        client(proxy).messages.create(model="c", max_tokens=5, messages=HISTORY, tools=[tool])
    assert "tool calling is not supported" in refused.value.body["error"]["message"]
    server_tool = {"type": "web_search_20250305", "name": "web_search"}
    with pytest.raises(anthropic.BadRequestError) as server:
        client(proxy).messages.create(model="c", max_tokens=5, messages=HISTORY, tools=[server_tool])
    assert (
        "the server tool 'web_search_20250305' (web_search) cannot run on this target"
        in server.value.body["error"]["message"]
    )


def test_keys_from_x_api_key_and_authorization_must_agree(proxy):
    body = {"model": "c", "max_tokens": 5, "messages": HISTORY}
    both = {"x-api-key": KEY, "Authorization": "Bearer another-key-0123456789"}
    refused = httpx.post(f"{proxy.url}/v1/messages", json=body, headers=both)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "Authorization and x-api-key hold different keys"


def test_claude_codes_probes_get_200_and_no_strike(start_proxy, fake_tgi):
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": {"/messages": MESSAGES_ROUTE}}}, cerbere={"max_tries": 1}
    )
    proxy = start_proxy(config)
    for _ in range(3):
        assert httpx.head(f"{proxy.url}/").status_code == 200
        assert httpx.head(f"{proxy.url}/api/hello").status_code == 200
    assert httpx.post(f"{proxy.url}/v1/messages", json={}, headers={"x-api-key": KEY}).status_code == 400


def test_a_chain_whose_links_do_not_fit_is_a_config_error(tmp_path):
    wrong = {**MESSAGES_ROUTE, "in": ["chatReqOpenAItoTGI", "messagesReqAnthropicToOpenAI"]}
    config = proxy_config({"tgi": {"url": "http://127.0.0.1:9", "mapping": {"/messages": wrong}}})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("--config", str(tmp_path / "config.yaml"), "--check")
    assert result.returncode == 1
    assert (
        "targets.tgi.mapping./messages.in.1: 'messagesReqAnthropicToOpenAI' takes anthropic.messages, "
        "but 'chatReqOpenAItoTGI' before it gives tgi.generate"
    ) in result.stderr


def test_claude_codes_large_max_tokens_is_clamped_and_an_overlong_prompt_said_its_way(proxy, fake_tgi):
    fake_tgi.reply = "Short answer."
    with client(proxy).messages.stream(model="c", max_tokens=32000, messages=HISTORY) as stream:
        message = stream.get_final_message()  # the SDK streams a request this large, as Claude Code does
    assert message.content[0].text == "Short answer."
    assert fake_tgi.received[-1].json()["parameters"]["max_new_tokens"] < 4096
    with pytest.raises(anthropic.BadRequestError) as refused:
        client(proxy).messages.create(model="c", max_tokens=100, messages=[{"role": "user", "content": "word " * 5000}])
    # Anthropic's own words, on which Claude Code compacts the conversation.
    error = refused.value.body["error"]
    assert (error["type"], error["message"]) == (
        "invalid_request_error",
        "prompt is too long: 5003 tokens > 4096 maximum",
    )


def test_count_tokens_asks_the_targets_tokenizer(proxy, fake_tgi):
    count = client(proxy).messages.count_tokens(model="c", system="You are Bob.", messages=HISTORY)
    assert fake_tgi.last.path == "/tokenize"
    message = client(proxy).messages.create(model="c", max_tokens=5, system="You are Bob.", messages=HISTORY)
    assert count.input_tokens == message.usage.input_tokens
