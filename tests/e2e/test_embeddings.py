"""Embeddings and reranking onto TEI (the fake TEI follows TEI's router): openai-python's
embeddings, floats and base64, with `dimensions`; batches larger than TEI takes at once; LangChain's
OpenAIEmbeddings; a Cohere-style rerank."""

from __future__ import annotations

import base64
import math
import struct

import httpx
import openai
import pytest
from langchain_openai import OpenAIEmbeddings

from conftest import KEY, auth, proxy_config
from support.fake_tei import MAX_CLIENT_BATCH_SIZE, MODEL_ID, vector

ROUTES = {
    "/embeddings": {"path": "/embed", "in": "embeddingsReqOpenAItoTEI", "out": "embeddingsAnsTEItoOpenAI"},
    "/rerank": {"path": "/rerank", "in": "rerankReqToTEI", "out": "rerankAnsTEIToRerank"},
}


@pytest.fixture
def proxy(start_proxy, fake_tei, fake_tgi):
    targets = {
        "chat": {"url": fake_tgi.url, "mapping": {"/generate": None}},
        "tei": {"url": fake_tei.url, "models": [MODEL_ID], "mapping": ROUTES},
    }
    return start_proxy(proxy_config(targets))


def openai_client(proxy) -> openai.OpenAI:
    # Not strict: openai-python asks for base64 itself and decodes it after validating, which its
    # strict mode refuses (against any server).
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=KEY, max_retries=0)


def close(first: list[float], second: list[float]) -> bool:
    return len(first) == len(second) and all(
        math.isclose(a, b, abs_tol=1e-6) for a, b in zip(first, second, strict=True)
    )


def test_openai_embeddings_as_floats_and_as_base64_with_dimensions(proxy, fake_tei):
    client = openai_client(proxy)
    # openai-python asks for base64 itself and decodes it: both encodings are at work here.
    answer = client.embeddings.create(model=MODEL_ID, input=["deep learning", "a cat"])
    assert [item.index for item in answer.data] == [0, 1]
    assert close(answer.data[0].embedding, vector("deep learning"))
    assert answer.model == MODEL_ID and answer.usage.prompt_tokens == 4  # TEI's x-compute-tokens
    assert fake_tei.last.json() == {"inputs": ["deep learning", "a cat"], "normalize": True}
    floats = client.embeddings.create(model=MODEL_ID, input="a cat", encoding_format="float")
    assert close(floats.data[0].embedding, vector("a cat"))
    body = {"model": MODEL_ID, "input": "deep learning", "dimensions": 4, "encoding_format": "base64"}
    cut = httpx.post(f"{proxy.url}/v1/embeddings", json=body, headers=auth()).json()
    values = list(struct.unpack("<4f", base64.b64decode(cut["data"][0]["embedding"])))
    full = vector("deep learning")[:4]
    norm = math.sqrt(sum(value * value for value in full)) or 1.0
    assert close(values, [value / norm for value in full])
    # The model name alone routes to the TEI target, which the model list shows.
    assert MODEL_ID in [model.id for model in client.models.list().data]


def test_a_batch_larger_than_tei_takes_is_split_and_joined_in_order(proxy, fake_tei):
    texts = [f"text number {index}" for index in range(2 * MAX_CLIENT_BATCH_SIZE + 1)]
    fake_tei.forget()
    answer = openai_client(proxy).embeddings.create(model=MODEL_ID, input=texts)
    assert len(fake_tei.received) == 3  # TEI's max_client_batch_size, from its /info
    assert all(len(request.json()["inputs"]) <= MAX_CLIENT_BATCH_SIZE for request in fake_tei.received)
    assert [item.index for item in answer.data] == list(range(len(texts)))
    assert all(close(item.embedding, vector(text)) for item, text in zip(answer.data, texts, strict=True))
    assert answer.usage.prompt_tokens == 3 * len(texts)


def test_embedding_errors_speak_openais_shape(proxy, fake_tei):
    client = openai_client(proxy)
    with pytest.raises(openai.BadRequestError) as empty:
        client.embeddings.create(model=MODEL_ID, input=[])
    assert empty.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as long:
        client.embeddings.create(model=MODEL_ID, input="word " * 100)
    assert "must have less than 64 tokens" in long.value.body["message"]  # TEI's own words


def test_langchain_openai_embeddings(proxy):
    embeddings = OpenAIEmbeddings(
        model=MODEL_ID, base_url=f"{proxy.url}/v1", api_key=KEY, check_embedding_ctx_length=False, max_retries=0
    )
    documents = embeddings.embed_documents(["deep learning", "a cat"])
    assert close(documents[1], vector("a cat"))
    assert close(embeddings.embed_query("deep learning"), vector("deep learning"))


def test_a_cohere_style_rerank(proxy, fake_tei):
    body = {
        "model": MODEL_ID,
        "query": "deep learning",
        "documents": ["a cat sat", {"text": "deep learning models"}, "learning to cook"],
        "top_n": 2,
        "return_documents": True,
    }
    answer = httpx.post(f"{proxy.url}/v1/rerank", json=body, headers=auth())
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [result["index"] for result in results] == [1, 2]
    assert results[0]["document"] == {"text": "deep learning models"}
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert fake_tei.last.json()["texts"] == ["a cat sat", "deep learning models", "learning to cook"]
    refused = httpx.post(f"{proxy.url}/v1/rerank", json={**body, "documents": []}, headers=auth())
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "documents"


def test_teis_own_openai_embeddings_pass_through_and_token_limits_count_embedding_tokens(start_proxy, fake_tei):
    routes = {**ROUTES, "/v1/openai/embeddings": {"path": "/v1/embeddings"}}
    clients = {"indexer": {"envkey": "INDEXER_KEY", "limits": {"tokens_per_minute": 12}}}
    config = proxy_config({"tei": {"url": fake_tei.url, "models": [MODEL_ID], "mapping": routes}}, clients=clients)
    proxy = start_proxy(config, env={"INDEXER_KEY": "indexer-key-0123456789"})
    relayed = openai.OpenAI(base_url=f"{proxy.url}/v1/openai", api_key=KEY, max_retries=0)
    answer = relayed.embeddings.create(model=MODEL_ID, input=["deep learning", "a cat"], encoding_format="float")
    assert close(answer.data[1].embedding, vector("a cat")) and answer.usage.prompt_tokens == 4
    assert fake_tei.last.path == "/v1/embeddings"
    # A key limited to 12 tokens a minute: the translated route's and the relayed one's usage
    # (TEI's x-compute-tokens, OpenAI's usage) both count.
    indexer = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="indexer-key-0123456789", max_retries=0)
    indexer.embeddings.create(model=MODEL_ID, input=["one two three", "four five six"], encoding_format="float")
    relayed_indexer = openai.OpenAI(base_url=f"{proxy.url}/v1/openai", api_key="indexer-key-0123456789", max_retries=0)
    relayed_indexer.embeddings.create(
        model=MODEL_ID, input="seven eight nine ten eleven twelve", encoding_format="float"
    )
    with pytest.raises(openai.RateLimitError):
        indexer.embeddings.create(model=MODEL_ID, input="thirteen", encoding_format="float")
