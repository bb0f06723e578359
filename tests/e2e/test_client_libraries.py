"""The client libraries operators point at the proxy: old openai<1 bindings, and LangChain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KEY, client_venv, proxy_config
from support.fake_tgi import tokenize
from support.routes import LLAMA2_PROMPT, TRANSLATED

CLIENTS = Path(__file__).resolve().parent.parent / "clients"


def old_openai_python() -> Path:
    return client_venv("openai-0.28.1", "openai==0.28.1")


@pytest.fixture
def proxy(start_proxy, fake_tgi):
    return start_proxy(
        proxy_config(
            {
                "llama": {"url": fake_tgi.url, "mapping": TRANSLATED},
                "other": {"url": "http://127.0.0.1:9", "mapping": {"/x": None}},
            },
            default="other",
        )
    )


def run_client(python: Path | str, script: str, *args: str) -> dict:
    result = subprocess.run([str(python), str(CLIENTS / script), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_old_openai_bindings_with_the_target_header(proxy, fake_tgi):
    fake_tgi.reply = "Why did the chicken cross the road? END To get to the other side."
    answers = run_client(old_openai_python(), "old_openai.py", proxy.url, KEY, "llama")
    chat, completion = answers["chat"], answers["completion"]
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "Why did the chicken cross the road? "}
    assert chat["choices"][0]["finish_reason"] == "stop"
    assert chat["usage"]["prompt_tokens"] == len(tokenize(LLAMA2_PROMPT)) + 1
    assert completion["choices"][0]["text"] == "Why did the chicken"
    assert completion["usage"]["completion_tokens"] == 4
    assert answers["refused"] == 401
    # The stream: a first delta with the role only, the content token by token, then the end.
    assert answers["streamed"][0] == ""
    assert "".join(answers["streamed"]) == "Why did the chicken cross the road? "
    assert len(answers["streamed"]) > 3
    chat_call = next(call for call in fake_tgi.received if call.json()["inputs"] == LLAMA2_PROMPT)
    assert chat_call.json()["parameters"]["do_sample"] is False
    assert chat_call.json()["parameters"]["stop"] == ["END", "[INST]"]


def test_langchain_chat_openai(proxy, fake_tgi):
    fake_tgi.reply = "Why did the chicken cross the road? END To get to the other side."
    answer = run_client(sys.executable, "langchain_chat.py", f"{proxy.url}/v1", KEY, "llama")
    assert answer["content"] == "Why did the chicken cross the road? "
    assert answer["finish_reason"] == "stop"
    assert answer["usage"]["input_tokens"] == len(tokenize(LLAMA2_PROMPT)) + 1
    parameters = fake_tgi.last.json()["parameters"]
    # LangChain sends max_tokens as max_completion_tokens.
    assert parameters["max_new_tokens"] == 40
    assert parameters["do_sample"] is False


@pytest.mark.parametrize("library", ["text_generation", "huggingface_hub"])
def test_tgi_clients_on_the_root_route(start_proxy, fake_tgi, library):
    # The template maps `/` on its TGI target: TGI's clients post there, streamed or not.
    proxy = start_proxy(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/": None}}}))
    fake_tgi.reply = "Deep learning stacks many layers of learned features."
    python = (
        client_venv("text-generation-0.7", "text-generation==0.7.0") if library == "text_generation" else sys.executable
    )
    answer = run_client(python, "tgi_clients.py", library, proxy.url, KEY)
    assert answer["text"] == "Deep learning stacks many layers"
    assert "".join(answer["streamed"]) == "Deep learning stacks many layers"
    assert (answer["finish_reason"], answer["generated_tokens"], answer["seed"]) == ("length", 5, 7)
    assert [request.path for request in fake_tgi.received] == ["/", "/"]
    assert [request.json().get("stream", False) for request in fake_tgi.received] == [False, True]
    assert all(request.headers.get("Authorization") is None for request in fake_tgi.received)
