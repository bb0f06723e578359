"""OpenAI /completions and /chat/completions <-> Hugging Face TGI /generate.

`n` > 1 (and a list of prompts on /completions) becomes one TGI call per choice, sent in
parallel, each with its own seed when a seed is given; the answers are merged into one object.
"""

from __future__ import annotations

from typing import Any

from mooltiproxy.context import FanOut, RequestContext
from mooltiproxy.settings import Endpoint
from mooltiproxy.tgi.answer import choice_text, completion_tokens, envelope, header_count, usage
from mooltiproxy.tgi.request import MAX_CHOICES, invalid, tgi_request

_STOPS = "tgi.stops"
_PROMPT_OF_CHOICE = "tgi.prompt_of_choice"
_ECHO = "tgi.echo"


def textReqOpenAItoTGI(payload: dict, endpoint: Endpoint, context: RequestContext) -> Any:
    """An OpenAI completion request -> TGI /generate request(s)."""
    prompts = _prompts(payload.get("prompt"))
    request = tgi_request(payload, endpoint.defaults)
    if len(prompts) * len(request.copies) > MAX_CHOICES:
        raise invalid(f"at most {MAX_CHOICES} choices (prompts x n) per request", "n")
    context.state[_STOPS] = request.stops
    context.state[_ECHO] = prompts if payload.get("echo") else None
    calls = [
        (index, {"inputs": prompt, "parameters": copy})
        for index, prompt in enumerate(prompts)
        for copy in request.copies
    ]
    context.state[_PROMPT_OF_CHOICE] = [index for index, _ in calls]
    return _one_or_many([call for _, call in calls])


def textAnsTGItoOpenAI(payload: Any, endpoint: Endpoint, context: RequestContext) -> dict:
    """TGI /generate answer(s) -> an OpenAI `text_completion`."""
    answers = _answers(payload)
    echo = context.state.get(_ECHO)
    prompt_of_choice = context.state.get(_PROMPT_OF_CHOICE, [0] * len(answers))
    choices = []
    generated = 0
    for index, answer in enumerate(answers):
        text, finish_reason, tokens = choice_text(answer, context.state.get(_STOPS, ()))
        if echo:
            text = echo[prompt_of_choice[index]] + text
        choices.append({"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason})
        generated += completion_tokens(answer, tokens, _headers(context, index))
    # Each distinct prompt counts once, as OpenAI counts it.
    first_choice_of_prompt: dict[int, int] = {}
    for index, prompt in enumerate(prompt_of_choice):
        first_choice_of_prompt.setdefault(prompt, index)
    prompt_tokens = sum(
        header_count(_headers(context, index), "x-prompt-tokens") for index in first_choice_of_prompt.values()
    )
    return envelope("text_completion", _model(context), choices, usage(prompt_tokens, generated))


def chatReqOpenAItoTGI(payload: dict, endpoint: Endpoint, context: RequestContext) -> Any:
    """An OpenAI chat request -> TGI /generate request(s), the prompt built by the endpoint's prompter."""
    prompt, prompt_stops = endpoint.prompter(payload.get("messages"), endpoint)
    request = tgi_request(payload, endpoint.defaults, list(prompt_stops))
    context.state[_STOPS] = request.stops
    return _one_or_many([{"inputs": prompt, "parameters": copy} for copy in request.copies])


chatReqOpenAItoTGI.needs_prompter = True


def chatAnsTGItoOpenAI(payload: Any, endpoint: Endpoint, context: RequestContext) -> dict:
    """TGI /generate answer(s) -> an OpenAI `chat.completion`."""
    choices = []
    generated = 0
    for index, answer in enumerate(_answers(payload)):
        text, finish_reason, tokens = choice_text(answer, context.state.get(_STOPS, ()))
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        )
        generated += completion_tokens(answer, tokens, _headers(context, index))
    prompt_tokens = header_count(context.upstream_headers, "x-prompt-tokens")
    return envelope("chat.completion", _model(context), choices, usage(prompt_tokens, generated))


def _prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(item, str) for item in prompt):
        return prompt
    raise invalid("'prompt' must be a string or a non-empty list of strings (token arrays are not supported)", "prompt")


def _one_or_many(calls: list[dict]) -> Any:
    return calls[0] if len(calls) == 1 else FanOut(calls)


def _answers(payload: Any) -> list:
    return list(payload) if isinstance(payload, FanOut) else [payload]


def _headers(context: RequestContext, index: int):
    return context.answer_headers[index] if index < len(context.answer_headers) else context.upstream_headers


def _model(context: RequestContext) -> str:
    model = context.body.get("model")
    return model if isinstance(model, str) and model else context.target.name
