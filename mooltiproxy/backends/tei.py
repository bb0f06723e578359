"""Hugging Face text-embeddings-inference (TEI) as a backend: OpenAI's embeddings onto its /embed,
and Cohere's and Jina's rerank onto its /rerank.

    /v1/embeddings:
      path: /embed
      in: embeddingsReqOpenAItoTEI
      out: embeddingsAnsTEItoOpenAI
    /v1/rerank:
      path: /rerank
      in: rerankReqToTEI
      out: rerankAnsTEIToRerank

A batch larger than what TEI takes at once (its /info's max_client_batch_size) is sent as several
requests in parallel and joined. `dimensions` is done here (the vector cut, then normalised again,
as a Matryoshka model's are meant to be read), and so is `encoding_format: base64`.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

from mooltiproxy.backends.base import Backend
from mooltiproxy.config.settings import Endpoint, TargetInfo
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.ids import new_id
from mooltiproxy.core.mapping import FanOut, Note
from mooltiproxy.serving.context import MapperContext
from mooltiproxy.translation.kinds import OPENAI_EMBEDDINGS, RERANK, TEI_EMBED, TEI_RERANK
from mooltiproxy.translation.marks import mapper

_EMBEDDING = Note[dict[str, Any]]("tei.embedding")  # the request's model, dimensions, encoding_format
_RERANK = Note[dict[str, Any]]("tei.rerank")  # the request's model, documents, top_n, return_documents


class TEIBackend(Backend):
    name = "tei"
    info_path = "/info"

    @staticmethod
    def read_info(body: Any) -> TargetInfo | None:
        batch = body.get("max_client_batch_size")
        if not isinstance(batch, int):
            return None
        model_id, length = body.get("model_id"), body.get("max_input_length")
        return TargetInfo(
            model_id=model_id if isinstance(model_id, str) else None,
            context_length=length if isinstance(length, int) else None,
            max_batch_size=batch,
            source=TEIBackend.info_path,
        )


def _invalid(message: str, param: str) -> ProxyError:
    return ProxyError(400, message, code="invalid_request_error", param=param)


@mapper(OPENAI_EMBEDDINGS, TEI_EMBED)
def embeddingsReqOpenAItoTEI(payload: dict, endpoint: Endpoint, context: MapperContext) -> Any:
    """OpenAI's embeddings request -> TEI /embed request(s), one per max_client_batch_size inputs."""
    inputs = _inputs(payload.get("input"))
    dimensions = payload.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise _invalid("dimensions: a positive integer is expected", "dimensions")
    encoding = payload.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _invalid("encoding_format: float or base64 is expected", "encoding_format")
    context.notes[_EMBEDDING] = {"model": payload.get("model"), "dimensions": dimensions, "encoding": encoding}
    batches = _batches(inputs, context.target_info.max_batch_size)
    requests = [{"inputs": batch, "normalize": True} for batch in batches]
    return requests[0] if len(requests) == 1 else FanOut(requests)


@mapper(TEI_EMBED, OPENAI_EMBEDDINGS)
def embeddingsAnsTEItoOpenAI(payload: Any, endpoint: Endpoint, context: MapperContext) -> dict[str, Any]:
    """TEI /embed answer(s) -> OpenAI's embedding list, with its usage from TEI's compute headers."""
    asked = context.notes.get(_EMBEDDING, {})
    answers = list(payload) if isinstance(payload, FanOut) else [payload]
    vectors = [vector for answer in answers for vector in _vectors(answer)]
    data = [
        {"object": "embedding", "index": index, "embedding": _encoded(_cut(vector, asked.get("dimensions")), asked)}
        for index, vector in enumerate(vectors)
    ]
    tokens = _compute_tokens(context, len(answers))
    return {
        "object": "list",
        "data": data,
        "model": asked.get("model") or "unknown",
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@mapper(RERANK, TEI_RERANK)
def rerankReqToTEI(payload: dict, endpoint: Endpoint, context: MapperContext) -> dict[str, Any]:
    """A Cohere- or Jina-style rerank request (`query`, `documents` as strings or {text}, `top_n`,
    `return_documents`) -> TEI /rerank."""
    query = payload.get("query")
    if not isinstance(query, str) or not query:
        raise _invalid("query: a non-empty string is required", "query")
    documents = payload.get("documents")
    if not isinstance(documents, list) or not documents:
        raise _invalid("documents: a non-empty list is required", "documents")
    texts = [_document_text(document, index) for index, document in enumerate(documents)]
    top_n = payload.get("top_n")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise _invalid("top_n: a positive integer is expected", "top_n")
    context.notes[_RERANK] = {
        "model": payload.get("model"),
        "texts": texts,
        "top_n": top_n,
        "return_documents": payload.get("return_documents", True) is not False,
    }
    return {"query": query, "texts": texts, "return_text": False}


@mapper(TEI_RERANK, RERANK)
def rerankAnsTEIToRerank(payload: Any, endpoint: Endpoint, context: MapperContext) -> dict[str, Any]:
    """TEI's ranks -> `results[{index, relevance_score, document?}]`, best first."""
    asked = context.notes.get(_RERANK, {})
    if not isinstance(payload, list) or not all(isinstance(rank, dict) for rank in payload):
        raise ProxyError(502, "The target's /rerank answer is not a list of ranks", code="upstream_error")
    ranks = sorted(payload, key=lambda rank: -float(rank.get("score", 0)))[: asked.get("top_n") or None]
    texts = asked.get("texts") or []
    results = []
    for rank in ranks:
        result: dict[str, Any] = {"index": rank.get("index"), "relevance_score": rank.get("score")}
        if asked.get("return_documents") and isinstance(rank.get("index"), int) and rank["index"] < len(texts):
            result["document"] = {"text": texts[rank["index"]]}
        results.append(result)
    tokens = _compute_tokens(context, 1)
    return {
        "id": new_id("rerank-"),
        "model": asked.get("model") or "unknown",
        "results": results,
        "usage": {"total_tokens": tokens},
    }


def _inputs(source: Any) -> list[Any]:
    """OpenAI's `input`: a string, a list of strings, token ids, or a list of token id lists."""
    if isinstance(source, str):
        return [source]
    if isinstance(source, list) and source:
        if all(isinstance(item, int) and not isinstance(item, bool) for item in source):
            return [source]
        if all(isinstance(item, str) or _token_ids(item) for item in source):
            return source
    raise _invalid("input: a string, a list of strings or of token id lists is required", "input")


def _token_ids(item: Any) -> bool:
    return (
        isinstance(item, list)
        and bool(item)
        and all(isinstance(token, int) and not isinstance(token, bool) for token in item)
    )


def _batches(inputs: list[Any], size: int | None) -> list[list[Any]]:
    if not size or len(inputs) <= size:
        return [inputs]
    return [inputs[start : start + size] for start in range(0, len(inputs), size)]


def _vectors(answer: Any) -> list[list[float]]:
    if not isinstance(answer, list) or not all(isinstance(vector, list) for vector in answer):
        raise ProxyError(502, "The target's /embed answer is not a list of vectors", code="upstream_error")
    return answer


def _cut(vector: list[float], dimensions: int | None) -> list[float]:
    """The first `dimensions` values, normalised again (Matryoshka models are read this way)."""
    if dimensions is None or dimensions >= len(vector):
        return vector
    kept = vector[:dimensions]
    norm = math.sqrt(sum(value * value for value in kept)) or 1.0
    return [value / norm for value in kept]


def _encoded(vector: list[float], asked: dict[str, Any]) -> Any:
    """As OpenAI sends it: floats, or their little-endian float32 bytes in base64."""
    if asked.get("encoding") != "base64":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _compute_tokens(context: MapperContext, answers: int) -> int:
    """The tokens TEI says it computed (its x-compute-tokens header), over every answer."""
    headers = context.answer_headers if answers > 1 else [context.upstream_headers] if context.upstream_headers else []
    total = 0
    for header in headers:
        value = header.get("x-compute-tokens") if header is not None else None
        total += int(value) if value is not None and value.isdigit() else 0
    return total


def _document_text(document: Any, index: int) -> str:
    if isinstance(document, str):
        return document
    text = document.get("text") if isinstance(document, dict) else None
    if isinstance(text, str):
        return text
    raise _invalid(f"documents[{index}]: a string or an object with text is expected", "documents")
