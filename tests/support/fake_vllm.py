"""A fake vLLM OpenAI-compatible server: the fake TGI's model and chat API, with what vLLM does
differently where the proxy can see it (vllm/entrypoints/openai/serving_engine.py, serving_chat.py,
serving_tokenization.py, api_server.py):
  - a request whose prompt and max_tokens do not fit `max_model_len` is refused before any stream
    starts, with a 400 `{"error": {"message", "type": "BadRequestError", "param", "code": 400}}` in
    vLLM's words (0.19's, below);
  - POST /tokenize takes `messages` (rendered by the chat template, as /v1/chat/completions renders
    them) or `prompt`, and answers `{"count", "max_model_len", "tokens"}`;
  - GET /v1/models lists the served model with its `max_model_len`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from support.fake_tgi import MAX_TOTAL_TOKENS, MODEL_ID, FakeTGI, Rejection, _chat_prompt, _tokens

MAX_MODEL_LEN = MAX_TOTAL_TOKENS


def _bad_request(message: str) -> web.Response:
    error = {"message": message, "type": "BadRequestError", "param": None, "code": 400}
    return web.Response(status=400, body=json.dumps({"error": error}).encode(), content_type="application/json")


class FakeVLLM(FakeTGI):
    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", "/v1/chat/completions", self.chat_completions),
            ("POST", "/tokenize", self.tokenize),
            ("GET", "/v1/models", self.models),
            ("GET", "/health", self.health),
        ]

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._parse(request, chat=True)
        except Rejection as rejection:
            return web.Response(status=rejection.status, text=rejection.text)
        prompt_tokens = len(_tokens(_chat_prompt(body.get("messages") or [])))
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        # serving_engine.py `_validate_input`: the prompt alone, then the prompt and max_tokens.
        if prompt_tokens >= MAX_MODEL_LEN:
            return _bad_request(
                f"This model's maximum context length is {MAX_MODEL_LEN} tokens. However, your request has "
                f"{prompt_tokens} input tokens. Please reduce the length of the input messages."
            )
        if max_tokens is not None and prompt_tokens + max_tokens > MAX_MODEL_LEN:
            total = prompt_tokens + max_tokens
            return _bad_request(
                f"This model's maximum context length is {MAX_MODEL_LEN} tokens. However, you requested "
                f"{max_tokens} output tokens and your prompt contains {prompt_tokens} input tokens, for a total "
                f"of {total} tokens ({prompt_tokens} + {max_tokens} = {total} > {MAX_MODEL_LEN}). Please reduce "
                "the length of the input prompt or the number of requested output tokens."
            )
        return await super().chat_completions(request)

    async def tokenize(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        text = _chat_prompt(body["messages"]) if "messages" in body else body["prompt"]
        tokens = [token["id"] for token in _tokens(text)]
        answer = {"count": len(tokens), "max_model_len": MAX_MODEL_LEN, "tokens": tokens, "token_strs": None}
        return web.Response(body=json.dumps(answer).encode(), content_type="application/json")

    async def models(self, request: web.Request) -> web.Response:
        model = {
            "id": MODEL_ID,
            "object": "model",
            "owned_by": "vllm",
            "root": MODEL_ID,
            "max_model_len": MAX_MODEL_LEN,
        }
        return web.Response(
            body=json.dumps({"object": "list", "data": [model]}).encode(), content_type="application/json"
        )
