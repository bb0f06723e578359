"""Streaming: OpenAI server-sent events from TGI's token stream, and unbuffered pass-through."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import KEY, TGI_FAILURES, auth, proxy_config, wait_for_log
from support.routes import TRANSLATED

MESSAGES = [{"role": "system", "content": "You are Bob."}, {"role": "user", "content": "Tell me a joke"}]


@pytest.fixture
def proxy(start_proxy, fake_tgi, echo):
    config = proxy_config(
        {
            "tgi": {
                "url": fake_tgi.url,
                "mapping": {
                    **TRANSLATED,
                    "/generate_stream": None,
                    "/explicit/chat": {
                        **TRANSLATED["/chat/completions"],
                        "path": "/",
                        "stream_path": "/generate_stream",
                    },
                },
            },
            "echo": {"url": echo.url, "mapping": {"/big": None}},
        },
        default="tgi",
        system={"timeout": 2},
    )
    return start_proxy(config)


def client(proxy, strict: bool = True) -> OpenAI:
    return OpenAI(base_url=f"{proxy.url}/v1", api_key=KEY, max_retries=0, _strict_response_validation=strict)


def test_chat_stream_equals_the_plain_answer(proxy, fake_tgi):
    fake_tgi.reply = "Why did the chicken cross the road? END To get to the other side."
    request = {"model": "llama", "messages": MESSAGES, "temperature": 0, "stop": "END", "max_tokens": 40}
    plain = client(proxy).chat.completions.create(**request)
    chunks = list(client(proxy).chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert fake_tgi.last.path == "/generate_stream"
    assert fake_tgi.last.json()["parameters"]["details"] is True
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(chunk.object == "chat.completion.chunk" and chunk.id == chunks[0].id for chunk in chunks)
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert content == plain.choices[0].message.content == "Why did the chicken cross the road? "
    finished = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finished == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage == plain.usage
    assert chunks[-1].model == "llama"


def test_completion_stream(proxy, fake_tgi):
    fake_tgi.reply = " jumps over the lazy dog"
    request = {"model": "m", "prompt": "The quick brown fox", "max_tokens": 3, "temperature": 0}
    plain = client(proxy).completions.create(**request)
    # OpenAI itself sends `finish_reason: null` until the last legacy-completion chunk, which the
    # client's CompletionChoice type does not allow: strict validation fails on OpenAI's own
    # stream too (openai/openai-openapi#100), so the chunks are checked here instead.
    chunks = list(client(proxy, strict=False).completions.create(**request, stream=True))
    assert all(chunk.object == "text_completion" and chunk.id == chunks[0].id for chunk in chunks)
    assert [chunk.choices[0].finish_reason for chunk in chunks] == [None] * (len(chunks) - 1) + ["length"]
    assert "".join(chunk.choices[0].text for chunk in chunks) == plain.choices[0].text == " jumps over the"
    assert chunks[-1].choices[0].finish_reason == "length"
    echoed = list(client(proxy, strict=False).completions.create(**request, stream=True, echo=True))
    assert "".join(chunk.choices[0].text for chunk in echoed) == "The quick brown fox jumps over the"


def test_tokens_reach_the_client_as_tgi_produces_them(proxy, fake_tgi):
    fake_tgi.reply = "one two three four five six"
    fake_tgi.token_delay = 0.2
    arrivals = []
    for chunk in client(proxy).chat.completions.create(model="m", messages=MESSAGES, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    assert len(arrivals) == 6
    # Six tokens paced 0.2 s apart: a buffering proxy would deliver them all at once.
    assert arrivals[-1] - arrivals[0] > 0.6


def test_stop_string_split_across_tokens_is_never_sent(proxy, fake_tgi):
    fake_tgi.reply = "alpha beta gamma delta"
    fake_tgi.keep_alive_comments = True
    deltas = [
        chunk.choices[0].delta.content
        for chunk in client(proxy).chat.completions.create(model="m", messages=MESSAGES, stream=True, stop=["ta gam"])
        if chunk.choices and chunk.choices[0].delta.content
    ]
    assert "".join(deltas) == "alpha be"
    # The partial match "ta" was held back, then dropped: never sent.
    assert not any("ta" in delta for delta in deltas)


def test_stops_beyond_tgis_limit_and_the_eos_token(proxy, fake_tgi):
    fake_tgi.reply = "one two three four five six"
    stops = ["s1", "s2", "s3", "s4", "r fi"]
    chunks = list(client(proxy, strict=False).completions.create(model="m", prompt="x", stream=True, stop=stops))
    assert "".join(chunk.choices[0].text for chunk in chunks) == "one two three fou"
    assert chunks[-1].choices[0].finish_reason == "stop"
    fake_tgi.reply = "short"
    stream = client(proxy, strict=False).completions.create(model="m", prompt="x", stream=True)
    text = "".join(chunk.choices[0].text for chunk in stream)
    assert text == "short"


def test_stream_path_given_explicitly(proxy, fake_tgi):
    answer = httpx.post(
        f"{proxy.url}/explicit/chat",
        json={"model": "m", "messages": MESSAGES, "stream": True},
        headers=auth(),
    )
    assert answer.headers["content-type"] == "text/event-stream"
    assert answer.text.endswith("data: [DONE]\n\n")
    assert fake_tgi.last.path == "/generate_stream"


@pytest.mark.parametrize(("failure", "exception"), TGI_FAILURES)
def test_error_opening_the_stream_is_a_plain_error(proxy, fake_tgi, failure, exception):
    fake_tgi.fail_with = failure
    with pytest.raises(exception) as raised:
        client(proxy).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert raised.value.status_code == failure[0]
    assert raised.value.body["message"] == failure[1]


def test_validation_error_inside_tgis_stream_is_a_400_invalid_request(proxy, fake_tgi):
    with pytest.raises(openai.BadRequestError) as raised:
        client(proxy).chat.completions.create(
            model="m", messages=MESSAGES, stream=True, temperature=0.7, extra_body={"truncate": 5000}
        )
    assert raised.value.body["message"] == (
        "Input validation error: `truncate` must be strictly positive and less than 4095. Given: 5000"
    )
    assert raised.value.body["type"] == "invalid_request_error"


def test_error_after_the_first_token_is_an_error_event(proxy, fake_tgi):
    fake_tgi.fail_with = (424, "Request failed during generation", "generation")
    fake_tgi.fail_after_tokens = 2
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in client(proxy).chat.completions.create(model="m", messages=MESSAGES, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Hello! I"
    assert "Request failed during generation" in str(raised.value)
    raw = httpx.post(
        f"{proxy.url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True}, headers=auth()
    )
    events = [chunk for chunk in raw.text.split("\n\n") if chunk]
    assert json.loads(events[-1][6:])["error"]["code"] == "generation"
    assert "[DONE]" not in raw.text


@pytest.mark.parametrize("bad", [{"n": 2}, {"stream": "yes"}])
def test_streams_that_have_no_meaning_are_400(proxy, fake_tgi, bad):
    body = {"model": "m", "messages": MESSAGES, "stream": True, **bad}
    answer = httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=auth())
    assert answer.status_code == 400
    best_of = httpx.post(
        f"{proxy.url}/v1/completions",
        json={"prompt": "x", "stream": True, "best_of": 2, "temperature": 0.5},
        headers=auth(),
    )
    assert best_of.status_code == 400
    assert fake_tgi.received == []


def test_client_disconnect_closes_the_upstream_stream(proxy, fake_tgi):
    fake_tgi.reply = " ".join(["word"] * 200)
    fake_tgi.token_delay = 1.0
    with httpx.stream(
        "POST",
        f"{proxy.url}/v1/chat/completions",
        headers=auth(),
        json={"model": "m", "messages": MESSAGES, "stream": True},
    ) as answer:
        lines = answer.iter_lines()
        assert next(lines).startswith("data: ")
    # The client left while the upstream is silent for a second: only a proxy that watches its
    # clients notices now rather than at its next write.
    assert fake_tgi.stream_closed.wait(0.6), "the proxy kept the upstream stream open"
    wait_for_log(proxy, "status=499")


def test_pass_through_stream_is_relayed_as_it_comes(proxy, fake_tgi):
    fake_tgi.reply = "a b c d e"
    fake_tgi.token_delay = 0.15
    arrivals = []
    with httpx.stream(
        "POST", f"{proxy.url}/generate_stream", headers=auth(), json={"inputs": "x", "parameters": {"details": True}}
    ) as answer:
        assert answer.headers["content-type"] == "text/event-stream"
        assert answer.headers["x-accel-buffering"] == "no"
        for line in answer.iter_lines():
            if line.startswith("data:"):
                arrivals.append((time.monotonic(), json.loads(line[5:])))
    assert [event["index"] for _, event in arrivals] == [1, 2, 3, 4, 5, 6]
    assert arrivals[-1][0] - arrivals[0][0] > 0.5


def rss_peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def test_memory_stays_flat_for_a_large_pass_through_body(proxy):
    before = rss_peak_kib(proxy.process.pid)
    received = 0
    with httpx.stream("GET", f"{proxy.url}/big?mb=100", headers={**auth(), "target": "echo"}, timeout=60) as answer:
        assert answer.headers["content-length"] == str(100 * 1024 * 1024)
        for chunk in answer.iter_raw():
            received += len(chunk)
    assert received == 100 * 1024 * 1024
    grown = rss_peak_kib(proxy.process.pid) - before
    assert grown < 20 * 1024, f"the proxy's peak memory grew by {grown} KiB relaying 100 MiB"
