"""Images from every front: on a vision route they reach TGI as its own chat API writes them
(`![](url)` in the prompt) and an OpenAI-compatible server as image_url parts; on a text-only route
they become a placeholder, or a 400 where the route refuses them; data URLs are checked."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from conftest import KEY, auth, proxy_config
from support.routes import fronts_onto_tgi
from support.tool_calls import openai_client

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
DATA_URL = f"data:image/png;base64,{PNG}"


def routes(**settings: object) -> dict:
    return fronts_onto_tgi(prompter="chat_template", template="llama3", **settings)


@pytest.fixture
def proxy(start_proxy, fake_tgi):
    targets = {
        "vision": {"url": fake_tgi.url, "mapping": routes(images="vision")},
        "urls": {"url": fake_tgi.url, "mapping": routes(images="vision", image_urls=True, max_image_bytes=1024)},
        "text": {"url": fake_tgi.url, "mapping": routes()},
        "strict": {"url": fake_tgi.url, "mapping": routes(images="refuse")},
        "server": {
            "url": fake_tgi.url,
            "mapping": {
                "/chat/completions": {
                    "path": "/v1/chat/completions",
                    "in": "chatReqOpenAItoCompatible",
                    "out": "chatAnsCompatibleToOpenAI",
                    "images": "vision",
                }
            },
        },
    }
    return start_proxy(proxy_config(targets, default="vision"))


def ask_openai(proxy, target: str, url: str = DATA_URL):
    image = {"type": "image_url", "image_url": {"url": url}}
    content = [{"type": "text", "text": "What is it?"}, image]
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers={**auth(), "target": target})


def test_an_image_from_each_front_reaches_a_vision_route_as_tgi_writes_it(proxy, fake_tgi):
    fake_tgi.reply = "A pixel."
    assert ask_openai(proxy, "vision").status_code == 200
    assert f"What is it?![]({DATA_URL})" in fake_tgi.last.json()["inputs"]
    claude = anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    claude.messages.create(
        model="m", max_tokens=16, messages=[{"role": "user", "content": [{"type": "text", "text": "See:"}, image]}]
    )
    assert f"See:![]({DATA_URL})" in fake_tgi.last.json()["inputs"]
    # A screenshot a tool took, inside its result.
    use = {"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Taken."}, image]}
    history = [
        {"role": "user", "content": "Look at the screen."},
        {"role": "assistant", "content": [use]},
        {"role": "user", "content": [result]},
    ]
    claude.messages.create(model="m", max_tokens=16, messages=history)
    assert f"Taken.![]({DATA_URL})" in fake_tgi.last.json()["inputs"]
    given = [
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "And this?"}, {"type": "input_image", "image_url": DATA_URL}],
        }
    ]
    openai_client(proxy).responses.create(model="m", input=given)
    assert f"And this?![]({DATA_URL})" in fake_tgi.last.json()["inputs"]


def test_a_vision_server_gets_image_parts(proxy, fake_tgi):
    fake_tgi.reply = "A pixel."
    assert ask_openai(proxy, "server").status_code == 200
    parts = fake_tgi.last.json()["messages"][0]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": DATA_URL}}


def test_a_text_only_route_says_an_image_was_left_out_and_a_strict_one_refuses(proxy, fake_tgi):
    fake_tgi.reply = "I cannot see it."
    assert ask_openai(proxy, "text").status_code == 200
    assert "What is it?\n[image omitted: this model reads text only]" in fake_tgi.last.json()["inputs"]
    metrics = httpx.get(f"{proxy.url}/_proxy/metrics", headers=auth()).text
    counted = [line for line in metrics.splitlines() if 'event="images_omitted"' in line]
    assert (
        len(counted) == 1
        and counted[0].startswith("mooltiproxy_translation_events_total{")
        and counted[0].endswith(" 1")
    )
    fake_tgi.forget()
    refused = ask_openai(proxy, "strict")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_image"
    assert not fake_tgi.received


def test_images_are_checked_and_urls_pass_only_where_allowed(proxy, fake_tgi):
    fake_tgi.forget()
    url = "https://example.com/cat.png"
    refused = ask_openai(proxy, "vision", url)
    assert refused.status_code == 400 and "image_urls" in refused.json()["error"]["message"]
    assert ask_openai(proxy, "urls", url).status_code == 200
    assert f"![]({url})" in fake_tgi.last.json()["inputs"]  # TGI fetches it; the proxy never does
    large = ask_openai(proxy, "urls", "data:image/png;base64," + "A" * 4096)
    assert large.status_code == 413
    wrong = ask_openai(proxy, "vision", "data:text/html;base64,PGI+aGk8L2I+")
    assert wrong.status_code == 400 and "media type text/html" in wrong.json()["error"]["message"]
    garbled = ask_openai(proxy, "vision", "data:image/png;base64,***")
    assert garbled.status_code == 400 and "not base64" in garbled.json()["error"]["message"]
