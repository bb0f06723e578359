"""A fake Hugging Face text-embeddings-inference (TEI) server that follows TEI's router
(router/src/http/server.rs and types.rs, core/src/tokenization.rs):

- `POST /embed` takes `inputs` as a string, token ids, or a batch of either; an empty batch is a
  400 `Empty`, a batch larger than `max_client_batch_size` a 422 `Validation`
  ("batch size N > maximum allowed batch size M"), an input longer than `max_input_length` tokens a
  422 unless `truncate`; it answers one vector per input (normalised unless `normalize: false`),
  with TEI's `x-compute-*` headers;
- `POST /rerank` takes `query` and `texts` under the same batch rules ("`texts` cannot be empty"),
  and answers `[{index, score, text?}]`, best first;
- `POST /predict`, `POST /tokenize` and `GET /info` as TEI answers them;
- `POST /v1/embeddings`, TEI's OpenAI-compatible embeddings (`openai_embed`): `input` under the
  same rules, `encoding_format` float or base64, `dimensions`, and OpenAI's `usage`.

Errors are `{"error", "error_type"}` with TEI's statuses (Empty 400, Validation and Tokenizer 422,
Backend 424); on `/v1/embeddings` they are `{"message", "code", "type"}` (OpenAICompatErrorResponse).
The vectors are deterministic (a hash of each word), so a test can compute what it expects.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from typing import Any

from aiohttp import web

from support.fake_tgi import token_id, tokenize
from support.threaded_server import ThreadedServer

MODEL_ID = "fake-org/fake-embedder"
DIMENSIONS = 8
MAX_INPUT_LENGTH = 64
MAX_CLIENT_BATCH_SIZE = 4


class TEIError(Exception):
    def __init__(self, message: str, error_type: str):
        super().__init__(message)
        self.message, self.error_type = message, error_type


_STATUSES = {"Empty": 400, "Validation": 422, "Tokenizer": 422, "Backend": 424}  # server.rs: ErrorType's


@web.middleware
async def _tei_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except TEIError as error:
        body = {"error": error.message, "error_type": error.error_type}
        return web.json_response(body, status=_STATUSES[error.error_type])


def vector(text: str, size: int = DIMENSIONS, normalize: bool = True) -> list[float]:
    """The fake model's embedding of a text: each word adds to the dimension its hash picks."""
    values = [0.0] * size
    for word in text.lower().split():
        values[zlib.crc32(word.encode()) % size] += 1.0
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return [value / norm for value in values] if normalize else values


# A sequence classifier's labels, Prompt-Guard's way; the fake flags this phrase as an injection.
LABELS = {"0": "BENIGN", "1": "INJECTION"}
FLAGGED = "ignore previous instructions"


class FakeTEI(ThreadedServer):
    """An embedding model's TEI, or with `classifier` a sequence classifier's (Prompt-Guard): each
    refuses what the other serves, as core/src/infer.rs does."""

    def __init__(self, port: int = 0, classifier: bool = False) -> None:
        super().__init__(port)
        self.max_client_batch_size = MAX_CLIENT_BATCH_SIZE
        self.classifier = classifier

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[_tei_errors])
        app.router.add_get("/info", self.info)
        app.router.add_get("/health", self.health)
        app.router.add_post("/embed", self.embed)
        app.router.add_post("/rerank", self.rerank)
        app.router.add_post("/predict", self.predict)
        app.router.add_post("/v1/embeddings", self.openai_embed)
        app.router.add_post("/tokenize", self.tokenize)
        return app

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "model_id": MODEL_ID,
                "model_sha": None,
                "model_dtype": "float32",
                "model_type": {"classifier": {"id2label": LABELS}}
                if self.classifier
                else {"embedding": {"pooling": "cls"}},
                "max_concurrent_requests": 512,
                "max_input_length": MAX_INPUT_LENGTH,
                "max_batch_tokens": 16384,
                "max_batch_requests": None,
                "max_client_batch_size": self.max_client_batch_size,
                "auto_truncate": False,
                "tokenization_workers": 2,
                "version": "1.8.0",
            }
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.Response()

    async def embed(self, request: web.Request) -> web.Response:
        if self.classifier:
            raise TEIError("Model is not an embedding model", "Backend")
        body = await request.json()
        texts = self._batch(body.get("inputs"), "`inputs` cannot be empty", body.get("truncate"))
        normalize = body.get("normalize", True)
        tokens = sum(len(tokenize(text)) for text in texts)
        return web.json_response([vector(text, normalize=normalize) for text in texts], headers=_compute(texts, tokens))

    async def openai_embed(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            if self.classifier:
                raise TEIError("Model is not an embedding model", "Backend")
            texts = self._batch(body.get("input"), "`input` cannot be empty", False)  # info.auto_truncate
        except TEIError as error:
            status = _STATUSES[error.error_type]
            return web.json_response(
                {"message": error.message, "code": status, "type": error.error_type}, status=status
            )
        dimensions = body.get("dimensions")
        data = []
        for index, text in enumerate(texts):
            values = vector(text)
            if isinstance(dimensions, int):  # a Matryoshka model's vector cut, then normalised again
                norm = math.sqrt(sum(value * value for value in values[:dimensions])) or 1.0
                values = [value / norm for value in values[:dimensions]]
            embedding: Any = values
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
            data.append({"object": "embedding", "embedding": embedding, "index": index})
        tokens = sum(len(tokenize(text)) for text in texts)
        answer = {
            "object": "list",
            "data": data,
            "model": MODEL_ID,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return web.json_response(answer, headers=_compute(texts, tokens))

    async def rerank(self, request: web.Request) -> web.Response:
        body = await request.json()
        query = body.get("query")
        if not isinstance(query, str):
            raise TEIError("missing field `query`", "Validation")
        texts = self._batch(body.get("texts"), "`texts` cannot be empty", body.get("truncate"))
        asked = vector(query)
        ranks = [
            {"index": index, "score": sum(a * b for a, b in zip(asked, vector(text), strict=True))}
            | ({"text": text} if body.get("return_text") else {})
            for index, text in enumerate(texts)
        ]
        ranks.sort(key=lambda rank: -rank["score"])
        tokens = sum(len(tokenize(query)) + len(tokenize(text)) for text in texts)
        return web.json_response(ranks, headers=_compute(texts, tokens))

    async def predict(self, request: web.Request) -> web.Response:
        """types.rs PredictInput: a string or a pair is one input; a list of lists ([s] or [a, b])
        is a batch, answered with a list of predictions each (highest score first)."""
        if not self.classifier:
            raise TEIError("Model is not a classifier model", "Backend")
        body = await request.json()
        inputs = body.get("inputs")
        batched = isinstance(inputs, list) and bool(inputs) and all(isinstance(item, list) for item in inputs)
        sequences = inputs if batched else [inputs if isinstance(inputs, list) else [inputs]]
        if not all(isinstance(item, list) and len(item) in (1, 2) for item in sequences):
            raise TEIError("data did not match any variant of untagged enum PredictInput", "Validation")
        texts = self._batch([" ".join(item) for item in sequences], "`inputs` cannot be empty", body.get("truncate"))
        predictions = [_prediction(text) for text in texts]
        return web.json_response(predictions if batched else predictions[0])

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        texts = self._batch(body.get("inputs"), "`inputs` cannot be empty", True)
        return web.json_response(
            [
                [
                    {"id": token_id(piece), "text": piece, "special": False, "start": None, "stop": None}
                    for piece in tokenize(text)
                ]
                for text in texts
            ]
        )

    def _batch(self, inputs: Any, empty: str, truncate: Any) -> list[str]:
        """The inputs as texts, under TEI's rules (token ids stand for one word each)."""
        batch = inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
        if isinstance(inputs, list) and not inputs:
            raise TEIError(empty, "Empty")
        if len(batch) > self.max_client_batch_size:
            message = f"batch size {len(batch)} > maximum allowed batch size {self.max_client_batch_size}"
            raise TEIError(message, "Validation")
        texts = []
        for item in batch:
            if isinstance(item, list) and all(isinstance(token, int) for token in item):
                item = " ".join(f"t{token}" for token in item)
            if not isinstance(item, str):
                raise TEIError("data did not match any variant of untagged enum Input", "Validation")
            length = len(tokenize(item))
            if length > MAX_INPUT_LENGTH and truncate is not True:
                raise TEIError(f"`inputs` must have less than {MAX_INPUT_LENGTH} tokens. Given: {length}", "Validation")
            texts.append(item)
        return texts


def _prediction(text: str) -> list[dict[str, Any]]:
    flagged = FLAGGED in text.lower()
    scores = {"INJECTION": 0.9995 if flagged else 0.0005, "BENIGN": 0.0005 if flagged else 0.9995}
    return sorted(({"score": score, "label": label} for label, score in scores.items()), key=lambda p: -p["score"])


def _compute(texts: list[str], tokens: int) -> dict[str, str]:
    """TEI's x-compute-* headers (router/src/lib.rs ResponseMetadata)."""
    return {
        "x-compute-type": "cpu",
        "x-compute-time": "1",
        "x-compute-characters": str(sum(len(text) for text in texts)),
        "x-compute-tokens": str(tokens),
        "x-total-time": "1",
        "x-tokenization-time": "0",
        "x-queue-time": "0",
        "x-inference-time": "1",
    }
