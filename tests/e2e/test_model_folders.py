"""A model's own folder (tokenizer_config.json and chat_template.jinja) serving requests through
the proxy, as transformers renders its template."""

from __future__ import annotations

import json

import httpx

from conftest import DATA, KEY, auth, proxy_config

PARTS_CASES = json.loads((DATA / "chat-templates-parts.json").read_text())


def test_a_model_folder_through_the_proxy(start_proxy, fake_tgi, tmp_path):
    gemma3 = next(case for case in PARTS_CASES if case["name"] == "google-gemma-3-27b-it")
    model = tmp_path / "gemma-3"
    model.mkdir()
    (model / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>", "eos_token": "<eos>"}))
    (model / "chat_template.jinja").write_text(gemma3["chat_template"])
    route = {"path": "/generate", "in": "chatReqOpenAItoTGI", "out": "chatAnsTGItoOpenAI"}
    config = proxy_config(
        {
            "tgi": {
                "url": fake_tgi.url,
                "mapping": {"/chat/completions": {**route, "prompter": "chat_template", "template": "Gemma3"}},
            }
        },
        templates={"Gemma3": {"tokenizer_config": str(model)}},
    )
    proxy = start_proxy(config)
    answer = httpx.post(
        f"{proxy.url}/v1/chat/completions", headers=auth(KEY), json={"model": "gemma-3", "messages": gemma3["messages"]}
    )
    assert answer.status_code == 200, answer.text
    # TGI adds the bos token itself: the proxy sends the rest of transformers' prompt.
    assert fake_tgi.last.json()["inputs"] == gemma3["expected"].removeprefix("<bos>")
