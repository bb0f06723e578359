"""A fake Hugging Face TGI server that behaves like TGI's router where the proxy can see it.

Faithful to TGI (router/src/server.rs, validation.rs) and its OpenAPI document:
  - /generate: 200 `application/json` (no charset) with `x-prompt-tokens` / `x-generated-tokens`
    headers; 422 `{"error", "error_type": "validation"}` for what TGI's validation rejects;
    axum's own rejections for bodies that do not deserialize (422 text/plain), bad JSON (400)
    and a missing JSON content type (415).
  - /generate_stream: 200 `text/event-stream`, events framed `data:{json}\n\n`; validation errors
    come as an error event inside the 200 stream; the EOS token is `special` and not part of
    `generated_text`; `details` only when asked.
  - `/`, /health, /info, /metrics, /tokenize. Unknown paths: 404 with an empty body.
The "model" is deterministic: it answers `reply` token by token (a token is a word with its
leading spaces, or one of `special_tokens` whole), then the EOS token, unless `max_new_tokens` or a
stop sequence ends it first. As in TGI, a special token's text is in its token (`special: true`)
but not in `generated_text`, which is decoded without special tokens.
Every request received is recorded in `received`, headers and body included.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from aiohttp import web

from support.threaded_server import ThreadedServer

MAX_INPUT_TOKENS = 4095
MAX_TOTAL_TOKENS = 4096
MAX_STOP_SEQUENCES = 4
MAX_BEST_OF = 2
MAX_TOP_N_TOKENS = 5
DEFAULT_GENERATION_LENGTH = 1024
EOS_TEXT = "</s>"
BOS_TEXT = "<s>"
BOS_ID = 1
EOS_ID = 2
MODEL_ID = "fake-org/fake-llama-7b-chat"
# Special tokens of tool-calling models (Mistral's markers, Llama 3.1's python tag).
SPECIAL_TOKENS = frozenset({"[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<|python_tag|>"})

_TOKEN = re.compile(r"\s*\S+|\s+$")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def token_id(text: str) -> int:
    return 3 + zlib.crc32(text.encode()) % 32000


class ValidationFailure(Exception):
    pass


class Rejection(Exception):
    """What axum answers before TGI's own code runs."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass
class Generation:
    tokens: list[dict]
    generated_text: str
    finish_reason: str
    input_length: int
    seed: int | None
    parameters: dict = field(default_factory=dict)


@web.middleware
async def _tgi_errors(request: web.Request, handler) -> web.StreamResponse:
    """axum answers unknown paths and wrong methods with empty bodies."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return web.Response(status=404)
    except web.HTTPMethodNotAllowed as exc:
        return web.Response(status=405, headers={"Allow": exc.headers.get("Allow", "")})


def _json_response(payload: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    # TGI (axum's Json) says `application/json` without a charset.
    response = web.Response(status=status, body=json.dumps(payload).encode(), headers=headers)
    response.headers["Content-Type"] = "application/json"
    return response


def _validation_error(message: str) -> web.Response:
    return _json_response({"error": f"Input validation error: {message}", "error_type": "validation"}, 422)


class FakeTGI(ThreadedServer):
    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.reset()

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=2 * 1024 * 1024, middlewares=[_tgi_errors])
        for method, path, handler in self.routes():
            app.router.add_route(method, path, handler)
        return app

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", "/generate", self.generate),
            ("POST", "/generate_stream", self.generate_stream),
            ("POST", "/", self.compat_generate),
            ("GET", "/health", self.health),
            ("GET", "/info", self.info),
            ("GET", "/metrics", self.metrics),
            ("POST", "/tokenize", self.tokenize),
            ("POST", "/chat_tokenize", self.chat_tokenize),
            ("POST", "/v1/chat/completions", self.chat_completions),
        ]

    def reset(self) -> None:
        self.received.clear()
        self.reply: str | list[str] = "Hello! I am a fake model, and this is my answer."
        # The next generations' replies, one each, before `reply` (an agent's turns, say).
        self.replies: list[str | list[str]] = []
        # The deployment's limits (TGI's --max-input-tokens and --max-total-tokens).
        self.max_input_tokens = MAX_INPUT_TOKENS
        self.max_total_tokens = MAX_TOTAL_TOKENS
        self.token_delay = 0.0
        # (status, error, error_type): the next generations fail that way, as TGI reports it;
        # streams first send `fail_after_tokens` tokens.
        self.fail_with: tuple[int, str, str] | None = None
        self.fail_after_tokens = 0
        # Send TGI's `:` keep-alive comments between stream events.
        self.keep_alive_comments = False
        # Set when a client goes away in the middle of a stream.
        self.stream_closed = threading.Event()
        # (name, arguments): /v1/chat/completions answers with this tool call when the request has tools.
        self.tool_call: tuple[str, dict] | None = None
        # What /info says the model is.
        self.model_id = MODEL_ID
        # TGI's --max-stop-sequences, said by /info and enforced by validation.
        self.max_stop_sequences = MAX_STOP_SEQUENCES
        # A reply that breaks the request's grammar is refused (no model under it could write it);
        # tests of what the proxy makes of any text at all turn this off.
        self.grammar_checked = True
        # Texts the tokenizer knows as special tokens.
        self.special_tokens: set[str] = set(SPECIAL_TOKENS)

    # ---- request parsing and validation, as TGI does it ----
    async def _parse(self, request: web.Request, chat: bool = False) -> dict:
        if request.content_type != "application/json":
            raise Rejection(415, "Expected request with `Content-Type: application/json`")
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            raise Rejection(400, f"Failed to parse the request body as JSON: {exc}") from None
        problem = _chat_deserialization_problem(body) if chat else _deserialization_problem(body)
        if problem:
            raise Rejection(422, f"Failed to deserialize the JSON body into the target type: {problem}")
        return body

    def _validate(self, body: dict, *, stream: bool) -> tuple[dict, int, int]:
        """Returns (parameters, input_length, max_new_tokens); raises ValidationFailure."""
        p = body.get("parameters") or {}
        best_of = p.get("best_of") or 1
        sampling = bool(p.get("do_sample")) or any(
            p.get(name) is not None for name in ("temperature", "top_k", "top_p", "typical_p")
        )
        if best_of > 1 and not sampling:
            raise ValidationFailure("you must use sampling when `best_of` is > 1")
        temperature = p.get("temperature")
        if temperature is not None and temperature <= 0:
            raise ValidationFailure("`temperature` must be strictly positive")
        repetition_penalty = p.get("repetition_penalty")
        if repetition_penalty is not None and repetition_penalty <= 0:
            raise ValidationFailure("`repetition_penalty` must be strictly positive")
        frequency_penalty = p.get("frequency_penalty")
        if frequency_penalty is not None and not -2.0 <= frequency_penalty <= 2.0:
            raise ValidationFailure("`frequency_penalty` must be >= -2.0 and <= 2.0")
        for name in ("top_p", "typical_p"):
            value = p.get(name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValidationFailure(f"`{name}` must be > 0.0 and < 1.0")
        top_k = p.get("top_k")
        if top_k is not None and top_k <= 0:
            raise ValidationFailure("`top_k` must be strictly positive")
        if p.get("max_new_tokens") == 0:
            raise ValidationFailure("`max_new_tokens` must be strictly positive")
        stop = p.get("stop") or []
        if len(stop) > self.max_stop_sequences:
            raise ValidationFailure(
                f"`stop` supports up to {self.max_stop_sequences} stop sequences. Given: {len(stop)}"
            )
        if p.get("seed") is not None and best_of > 1:
            raise ValidationFailure("`seed` must not be set when `best_of` > 1")
        top_n = p.get("top_n_tokens")
        if top_n is not None and top_n > MAX_TOP_N_TOKENS:
            raise ValidationFailure(f"`top_n_tokens` must be >= 0 and <= {MAX_TOP_N_TOKENS}. Given: {top_n}")
        if not body["inputs"]:
            raise ValidationFailure("`inputs` cannot be empty")
        truncate = p.get("truncate")
        if truncate is not None and (truncate == 0 or truncate > self.max_input_tokens):
            raise ValidationFailure(
                f"`truncate` must be strictly positive and less than {self.max_input_tokens}. Given: {truncate}"
            )
        input_length = len(tokenize(body["inputs"])) + 1  # the tokenizer adds BOS
        if truncate is not None:
            input_length = min(input_length, truncate)
        max_new_tokens = p.get("max_new_tokens")
        if max_new_tokens is None:
            max_new_tokens = min(self.max_total_tokens - input_length, DEFAULT_GENERATION_LENGTH)
        if input_length + max_new_tokens > self.max_total_tokens:
            raise ValidationFailure(
                f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. "
                f"Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
            )
        if input_length > self.max_input_tokens:
            limit = self.max_input_tokens
            raise ValidationFailure(f"`inputs` must have less than {limit} tokens. Given: {input_length}")
        if p.get("grammar") is not None:
            _validate_grammar(p["grammar"])
        if stream and best_of != 1:
            raise ValidationFailure("`best_of` != 1 is not supported when streaming tokens")
        if stream and p.get("decoder_input_details"):
            raise ValidationFailure("`decoder_input_details` == true is not supported when streaming tokens")
        if best_of > MAX_BEST_OF:
            raise ValidationFailure(f"`best_of` must be > 0 and <= {MAX_BEST_OF}. Given: {best_of}")
        return p, input_length, max_new_tokens

    def _pieces(self) -> list[tuple[str, bool]]:
        """The reply's tokens, as (text, special); a reply given as a list is its tokens already
        (a real tokenizer's pieces, which split words)."""
        if isinstance(self.reply, list):
            return [(piece, piece in self.special_tokens) for piece in self.reply]
        if not self.special_tokens:
            return [(piece, False) for piece in tokenize(self.reply)]
        specials = "|".join(map(re.escape, sorted(self.special_tokens, key=len, reverse=True)))
        pieces: list[tuple[str, bool]] = []
        for part in re.split(f"({specials})", self.reply):
            if part in self.special_tokens:
                pieces.append((part, True))
            else:
                pieces.extend((piece, False) for piece in tokenize(part))
        return pieces

    def _generate(self, parameters: dict, input_length: int, max_new_tokens: int) -> Generation:
        if self.replies:
            self.reply = self.replies.pop(0)
        self._check_reply_follows(grammar_schema(parameters.get("grammar")))
        stops = parameters.get("stop") or []
        tokens: list[dict] = []
        text = ""  # decoded without special tokens
        decoded = ""  # with them: what stop sequences are looked for in
        finish_reason = "length"
        for piece, special in [*self._pieces(), (None, True)]:
            if len(tokens) == max_new_tokens:
                break
            if piece is None:
                tokens.append({"id": EOS_ID, "text": EOS_TEXT, "logprob": -0.01, "special": True})
                finish_reason = "eos_token"
                break
            tokens.append({"id": token_id(piece), "text": piece, "logprob": -0.25, "special": special})
            text += "" if special else piece
            decoded += piece
            if any(decoded.endswith(stop) for stop in stops if stop):
                finish_reason = "stop_sequence"
                break
        else:
            finish_reason = "length"
        return Generation(tokens, text, finish_reason, input_length, parameters.get("seed"), parameters)

    def _check_reply_follows(self, schema: dict | None) -> None:
        """A model under a grammar writes nothing else: a reply that breaks it is a test's mistake."""
        if schema is None or not self.grammar_checked:
            return
        text = "".join(piece for piece, special in self._pieces() if not special)
        try:
            jsonschema.validate(json.loads(text), schema)
        except (ValueError, jsonschema.ValidationError) as exc:
            message = f"fake TGI: the reply {text!r} does not follow the request's grammar: {exc}"
            raise web.HTTPInternalServerError(text=message) from None

    @staticmethod
    def _headers(generation: Generation) -> dict[str, str]:
        return {
            "x-compute-type": "gpu+optimized",
            "x-prompt-tokens": str(generation.input_length),
            "x-generated-tokens": str(len(generation.tokens)),
            "x-model-id": MODEL_ID,
        }

    def _injected_failure(self) -> web.Response | None:
        if self.fail_with is None:
            return None
        status, error, error_type = self.fail_with
        return _json_response({"error": error, "error_type": error_type}, status)

    # ---- endpoints ----
    async def generate(self, request: web.Request) -> web.Response:
        try:
            body = await self._parse(request)
        except Rejection as rejection:
            return web.Response(status=rejection.status, text=rejection.text)
        try:
            parameters, input_length, max_new_tokens = self._validate(body, stream=False)
        except ValidationFailure as failure:
            return _validation_error(str(failure))
        failure = self._injected_failure()
        if failure is not None:
            return failure
        generation = self._generate(parameters, input_length, max_new_tokens)
        await asyncio.sleep(self.token_delay * len(generation.tokens))
        return _json_response(self._generate_payload(generation), headers=self._headers(generation))

    def _generate_payload(self, generation: Generation) -> dict:
        payload: dict[str, Any] = {"generated_text": generation.generated_text}
        if generation.parameters.get("return_full_text"):
            payload["generated_text"] = "<prompt>" + generation.generated_text
        if generation.parameters.get("details"):
            details: dict[str, Any] = {
                "finish_reason": generation.finish_reason,
                "generated_tokens": len(generation.tokens),
                "seed": generation.seed,
                "prefill": [],
                "tokens": generation.tokens,
                "top_tokens": [],
            }
            best_of = generation.parameters.get("best_of") or 1
            if best_of > 1:
                details["best_of_sequences"] = [
                    {
                        "generated_text": generation.generated_text,
                        "finish_reason": generation.finish_reason,
                        "generated_tokens": len(generation.tokens),
                        "seed": 0,
                        "prefill": [],
                        "tokens": generation.tokens,
                        "top_tokens": [],
                    }
                ] * (best_of - 1)
            payload["details"] = details
        return payload

    async def compat_generate(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._parse(request)
        except Rejection as rejection:
            return web.Response(status=rejection.status, text=rejection.text)
        if body.get("stream"):
            return await self._stream(request, body)
        try:
            parameters, input_length, max_new_tokens = self._validate(body, stream=False)
        except ValidationFailure as failure:
            return _validation_error(str(failure))
        generation = self._generate(parameters, input_length, max_new_tokens)
        return _json_response([self._generate_payload(generation)], headers=self._headers(generation))

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._parse(request)
        except Rejection as rejection:
            return web.Response(status=rejection.status, text=rejection.text)
        return await self._stream(request, body)

    async def _stream(self, request: web.Request, body: dict) -> web.StreamResponse:
        # TGI's stream headers: no token counts there (they come in the last event's details).
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-compute-type": "gpu+optimized",
                "x-accel-buffering": "no",
            }
        )
        try:
            parameters, input_length, max_new_tokens = self._validate(body, stream=True)
        except ValidationFailure as failure:
            await response.prepare(request)
            await self._event(response, {"error": f"Input validation error: {failure}", "error_type": "validation"})
            return response
        generation = self._generate(parameters, input_length, max_new_tokens)
        await response.prepare(request)
        try:
            for index, token in enumerate(generation.tokens, start=1):
                if self.fail_with is not None and index > self.fail_after_tokens:
                    status, error, error_type = self.fail_with
                    await self._event(response, {"error": error, "error_type": error_type})
                    return response
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                if self.keep_alive_comments:
                    await response.write(b":\n\n")
                event: dict[str, Any] = {
                    "index": index,
                    "token": token,
                    "top_tokens": [],
                    "generated_text": None,
                    "details": None,
                }
                if index == len(generation.tokens):
                    event["generated_text"] = generation.generated_text
                    if parameters.get("details"):
                        event["details"] = {
                            "finish_reason": generation.finish_reason,
                            "generated_tokens": len(generation.tokens),
                            "input_length": input_length,
                            "seed": generation.seed,
                        }
                await self._event(response, event)
        except (ConnectionResetError, asyncio.CancelledError):
            self.stream_closed.set()
            raise
        return response

    # ---- TGI's OpenAI-compatible Messages API (router/src/server.rs chat_completions) ----
    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._parse(request, chat=True)
        except Rejection as rejection:
            return web.Response(status=rejection.status, text=rejection.text)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _validation_error("`messages` cannot be empty")
        prompt = _chat_prompt(messages)
        # TGI takes max_completion_tokens as another name for max_tokens (ChatRequest::try_into_generate),
        # and validates the request it makes as /generate's (router/src/validation.rs).
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        stop = body.get("stop") or []
        parameters = {"max_new_tokens": max_tokens, "stop": [stop] if isinstance(stop, str) else stop}
        # The sampling parameters as ChatRequest::try_into_generate (router/src/lib.rs) passes them:
        # temperature 0 is greedy, presence_penalty p becomes repetition_penalty p + 2.
        if body.get("temperature") not in (None, 0):
            parameters["temperature"] = body["temperature"]
        for name in ("top_p", "frequency_penalty", "seed"):
            if body.get(name) is not None:
                parameters[name] = body[name]
        if body.get("presence_penalty") is not None:
            parameters["repetition_penalty"] = body["presence_penalty"] + 2
        try:
            generate = {"inputs": prompt, "parameters": parameters}
            parameters, input_length, max_tokens = self._validate(generate, stream=False)
        except ValidationFailure as failure:
            message = f"Input validation error: {failure}"
            if not body.get("stream"):
                return _validation_error(str(failure))
            # In a stream, TGI sends the error as an OpenAI-style event in the 200 stream, then [DONE]
            # (router/src/infer/mod.rs `into_openai_event`, server.rs `chat_completions`).
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await response.prepare(request)
            await self._event(response, {"error": {"message": message, "http_status_code": 422}})
            await response.write(b"data:[DONE]\n\n")
            return response
        generation = self._generate(parameters, input_length, max_tokens)
        call = self.tool_call if body.get("tools") and body.get("tool_choice") != "none" else None
        usage = {
            "prompt_tokens": generation.input_length,
            "completion_tokens": len(generation.tokens),
            "total_tokens": generation.input_length + len(generation.tokens),
        }
        envelope = {"id": "", "created": int(time.time()), "model": MODEL_ID, "system_fingerprint": "3.3.7-native"}
        if not body.get("stream"):
            if call is not None:
                function = {"name": call[0], "arguments": json.dumps(call[1], separators=(",", ":"))}
                message: dict[str, Any] = {
                    "role": "assistant",
                    "tool_calls": [{"id": "0", "type": "function", "function": function}],
                }
                finish = "stop"  # TGI says stop for a tool call, with no content
            else:
                message = {"role": "assistant", "content": generation.generated_text}
                finish = "length" if generation.finish_reason == "length" else "stop"
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            return _json_response({"object": "chat.completion", **envelope, "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def chunk(delta: dict, finish: str | None = None, **extra: Any) -> None:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            await self._event(response, {"object": "chat.completion.chunk", **envelope, "choices": [choice], **extra})

        if call is not None:
            # TGI streams a tool call's arguments piece by piece, and never a finish_reason.
            arguments = json.dumps(call[1], separators=(",", ":"))
            function = {"name": call[0], "arguments": ""}
            await chunk(
                {"role": "assistant", "tool_calls": [{"index": 0, "id": "", "type": "function", "function": function}]}
            )
            for start in range(0, len(arguments), 8):
                piece = {
                    "index": 0,
                    "id": "",
                    "type": "function",
                    "function": {"name": None, "arguments": arguments[start : start + 8]},
                }
                await chunk({"role": "assistant", "tool_calls": [piece]})
        else:
            for index, token in enumerate(generation.tokens, start=1):
                last = index == len(generation.tokens)
                finish = ("length" if generation.finish_reason == "length" else "stop") if last else None
                text = "" if token["special"] else token["text"]
                await chunk({"role": "assistant", "content": text}, finish)
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            await self._event(response, {"object": "chat.completion.chunk", **envelope, "choices": [], "usage": usage})
        await response.write(b"data:[DONE]\n\n")
        return response

    @staticmethod
    async def _event(response: web.StreamResponse, payload: dict) -> None:
        # TGI (axum's Sse) frames events as `data:{json}`, without a space.
        await response.write(b"data:" + json.dumps(payload).encode() + b"\n\n")

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def info(self, request: web.Request) -> web.Response:
        return _json_response(
            {
                "model_id": self.model_id,
                "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": MAX_BEST_OF,
                "max_stop_sequences": self.max_stop_sequences,
                "max_input_tokens": self.max_input_tokens,
                "max_total_tokens": self.max_total_tokens,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": "3.3.6-dev0",
                "sha": None,
                "docker_label": None,
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        text = f"# TYPE tgi_request_count counter\ntgi_request_count {len(self.received)}\n"
        return web.Response(text=text, content_type="text/plain")

    async def tokenize(self, request: web.Request) -> web.Response:
        try:
            body = await self._parse(request)
        except Rejection as rejection:
            return web.Response(status=rejection.status, text=rejection.text)
        return _json_response(_tokens(body["inputs"]))

    async def chat_tokenize(self, request: web.Request) -> web.Response:
        """The chat request templated as /v1/chat/completions would, then tokenized (server.rs
        `get_chat_tokenize`)."""
        try:
            body = await self._parse(request, chat=True)
        except Rejection as rejection:
            return web.Response(status=rejection.status, text=rejection.text)
        prompt = _chat_prompt(body["messages"])
        return _json_response({"tokenize_response": _tokens(prompt), "templated_text": prompt})


def _validate_grammar(grammar: dict) -> None:
    """TGI's grammar rules (router/src/validation.rs, `Validation::validate`): the JSON schema is
    checked against the draft 2020-12 meta-schema and must have a top-level `properties`."""
    kind, value = grammar["type"], grammar["value"]
    if kind == "regex":
        return
    schema = value["schema"] if kind == "json_schema" else value
    if kind != "json_schema" and isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise ValidationFailure(f"grammar is not valid: {exc}") from None
    if not isinstance(schema, dict):
        raise ValidationFailure("grammar is not supported")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValidationFailure(f"grammar is not valid: {exc.message}") from None
    if "properties" not in schema:
        raise ValidationFailure("grammar is not valid: Grammar must have a 'properties' field")


def grammar_schema(grammar: dict | None) -> dict | None:
    """The JSON schema a generation must follow, for a validated grammar."""
    if grammar is None or grammar["type"] == "regex":
        return None
    schema = grammar["value"]["schema"] if grammar["type"] == "json_schema" else grammar["value"]
    return json.loads(schema) if isinstance(schema, str) else schema


_PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "best_of": (int,),
    "temperature": (int, float),
    "repetition_penalty": (int, float),
    "frequency_penalty": (int, float),
    "top_k": (int,),
    "top_p": (int, float),
    "typical_p": (int, float),
    "truncate": (int,),
    "max_new_tokens": (int,),
    "seed": (int,),
    "top_n_tokens": (int,),
    "do_sample": (bool,),
    "details": (bool,),
    "decoder_input_details": (bool,),
    "return_full_text": (bool,),
    "watermark": (bool,),
    "adapter_id": (str,),
}
_UNSIGNED = {"best_of", "truncate", "max_new_tokens", "seed", "top_n_tokens"}


def _chat_deserialization_problem(body: Any) -> str | None:
    """What serde would refuse in a ChatRequest."""
    if not isinstance(body, dict):
        return "invalid type: expected struct ChatRequest"
    if not isinstance(body.get("messages"), list):
        return "missing field `messages`"
    for index, message in enumerate(body["messages"]):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"messages[{index}]: missing field `role`"
    return None


def _tokens(text: str) -> list[dict]:
    """/tokenize's answer: the tokenizer adds its special tokens, as /generate's input_length counts
    them (the BOS)."""
    tokens, start = [{"id": BOS_ID, "text": BOS_TEXT, "start": 0, "stop": 0}], 0
    for piece in tokenize(text):
        tokens.append({"id": token_id(piece), "text": piece, "start": start, "stop": start + len(piece)})
        start += len(piece)
    return tokens


def _chat_prompt(messages: list[dict]) -> str:
    """The fake's chat template: each message on a line of its own."""
    return "".join(f"{m.get('role')}: {_chat_text(m.get('content'))}\n" for m in messages) + "assistant:"


def _chat_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _deserialization_problem(body: Any) -> str | None:
    """What serde would refuse in a GenerateRequest (unknown fields are ignored, as serde does)."""
    if not isinstance(body, dict):
        return "invalid type: expected struct GenerateRequest"
    if "inputs" not in body:
        return "missing field `inputs`"
    if not isinstance(body["inputs"], str):
        return "inputs: invalid type: expected a string"
    parameters = body.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        return "parameters: invalid type: expected struct GenerateParameters"
    for name, value in parameters.items():
        if name == "grammar" and value is not None:
            # serde's GrammarType (router/src/lib.rs): {"type": json | json_object | regex | json_schema, "value"}
            kinds = {"json": (dict, str), "json_object": (dict, str), "regex": (str,), "json_schema": (dict,)}
            if not isinstance(value, dict) or value.get("type") not in kinds or "value" not in value:
                return "parameters.grammar: unknown variant, expected `json`, `json_object`, `regex`, `json_schema`"
            if not isinstance(value["value"], kinds[value["type"]]):
                return f"parameters.grammar.value: invalid type for `{value['type']}`"
            if value["type"] == "json_schema" and not isinstance(value["value"].get("schema"), dict):
                return "parameters.grammar.value: missing field `schema`"
            continue
        if name == "stop":
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                return "parameters.stop: invalid type: expected a sequence of strings"
            continue
        types = _PARAMETER_TYPES.get(name)
        if types is None or value is None:
            continue
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            return f"parameters.{name}: invalid type: {value!r}"
        if name in _UNSIGNED and value < 0:
            return f"parameters.{name}: invalid value: integer `{value}`, expected u32 or u64"
    return None


if __name__ == "__main__":
    # A stand-in TGI for trying the proxy by hand: PYTHONPATH=tests python -m support.fake_tgi [PORT]
    import sys
    import time

    server = FakeTGI(int(sys.argv[1]) if len(sys.argv) > 1 else 8080).start()
    print(f"fake TGI on {server.url}", flush=True)
    while True:
        time.sleep(3600)
