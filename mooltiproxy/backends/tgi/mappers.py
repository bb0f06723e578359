"""OpenAI /completions and /chat/completions <-> Hugging Face TGI /generate and /generate_stream.

`n` > 1 (and a list of prompts on /completions) becomes one TGI call per choice, sent in
parallel, each with its own seed when a seed is given; the answers are merged into one object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from multidict import CIMultiDictProxy

from mooltiproxy.backends.tgi.answer import choice_text, completion_tokens, envelope, header_count, usage
from mooltiproxy.backends.tgi.grammar import tool_grammar
from mooltiproxy.backends.tgi.request import MAX_CHOICES, invalid, tgi_request
from mooltiproxy.backends.tgi.stream import TGIStreamTranslator
from mooltiproxy.backends.tgi.tool_prompts import without_tool_turns
from mooltiproxy.config.settings import Endpoint
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.mapping import FanOut, Note, Streamed
from mooltiproxy.parsers.reasoning import REASONING_PARSERS
from mooltiproxy.parsers.reasoning.base import ReasoningStream
from mooltiproxy.parsers.tools import GRAMMAR, TOOL_PARSERS
from mooltiproxy.parsers.tools.base import ToolParser
from mooltiproxy.serving.context import MapperContext
from mooltiproxy.translation.context_window import with_room
from mooltiproxy.translation.images import image_url, with_images_ready
from mooltiproxy.translation.kinds import OPENAI_CHAT, OPENAI_COMPLETIONS, TGI_GENERATE, TGI_TOKENIZE
from mooltiproxy.translation.marks import mapper

_STOPS = Note[Sequence[str]]("tgi.stops")
_PROMPT_OF_CHOICE = Note[list[int]]("tgi.prompt_of_choice")
_ECHO = Note[list[str] | None]("tgi.echo")
_INCLUDE_USAGE = Note[bool]("tgi.include_usage")
_TOOL_PARSER = Note[str]("tgi.tool_parser")
_TOOLS = Note[list[Any]]("tgi.tools")
_ONE_CALL = Note[bool]("tgi.one_call")  # parallel_tool_calls: false
_STARTS_IN_REASONING = Note[bool]("tgi.starts_in_reasoning")  # what the rendered prompt's tail says


@mapper(OPENAI_COMPLETIONS, TGI_GENERATE)
def textReqOpenAItoTGI(payload: dict, endpoint: Endpoint, context: MapperContext) -> Any:
    """An OpenAI completion request -> TGI /generate request(s), or a /generate_stream one."""
    prompts = _prompts(payload.get("prompt"))
    stream = _streamed(payload, context)
    request = tgi_request(payload, endpoint.defaults, stream=stream, max_stops=context.target_info.max_stop_sequences)
    if len(prompts) * len(request.copies) > MAX_CHOICES:
        raise invalid(f"at most {MAX_CHOICES} choices (prompts x n) per request", "n")
    context.notes[_STOPS] = request.stops
    context.notes[_ECHO] = prompts if payload.get("echo") else None
    if stream:
        if len(prompts) * len(request.copies) > 1:
            raise invalid("streaming is supported for one prompt and n = 1", "stream")
        return Streamed({"inputs": prompts[0], "parameters": request.copies[0]})
    calls = [
        (index, {"inputs": prompt, "parameters": copy})
        for index, prompt in enumerate(prompts)
        for copy in request.copies
    ]
    context.notes[_PROMPT_OF_CHOICE] = [index for index, _ in calls]
    return _one_or_many([call for _, call in calls])


def _text_stream(endpoint: Endpoint, context: MapperContext) -> TGIStreamTranslator:
    echo = context.notes.get(_ECHO)
    return TGIStreamTranslator(
        "text", _model(context), context.notes[_STOPS], context.notes[_INCLUDE_USAGE], echo[0] if echo else ""
    )


def _chat_stream(endpoint: Endpoint, context: MapperContext) -> TGIStreamTranslator:
    return TGIStreamTranslator(
        "chat",
        _model(context),
        context.notes[_STOPS],
        context.notes[_INCLUDE_USAGE],
        tool_parser=context.notes.get(_TOOL_PARSER),
        tools=context.notes.get(_TOOLS) or (),
        one_call=context.notes.get(_ONE_CALL, False),
        reasoning=_reasoning_stream(endpoint, context),
        kept_specials=_kept_special_tokens(TOOL_PARSERS.get(context.notes.get(_TOOL_PARSER) or ""), endpoint),
    )


def _kept_special_tokens(tool_parser: ToolParser | None, endpoint: Endpoint) -> frozenset[str]:
    """The special tokens whose text the answer keeps: the markers its parsers read."""
    kept = tool_parser.special_tokens if tool_parser is not None else frozenset()
    if endpoint.reasoning_parser is not None:
        kept |= REASONING_PARSERS[endpoint.reasoning_parser].special_tokens
    return kept


def _reasoning_stream(endpoint: Endpoint, context: MapperContext) -> ReasoningStream | None:
    if endpoint.reasoning_parser is None:
        return None
    return REASONING_PARSERS[endpoint.reasoning_parser].stream(context.notes.get(_STARTS_IN_REASONING, False))


def _context_window(error: ProxyError, sent: dict, context: MapperContext) -> dict | None:
    """TGI's 422 for a prompt and max_tokens that do not fit: sent once more with max_new_tokens
    clamped to the room the prompt leaves."""
    return with_room(error, sent, _with_max_new_tokens)


def _with_max_new_tokens(sent: dict, room: int) -> dict:
    return type(sent)({**sent, "parameters": {**sent["parameters"], "max_new_tokens": room}})


@mapper(TGI_GENERATE, OPENAI_COMPLETIONS, streams_with=_text_stream, on_upstream_error=_context_window)
def textAnsTGItoOpenAI(payload: Any, endpoint: Endpoint, context: MapperContext) -> dict:
    """TGI /generate answer(s) -> an OpenAI `text_completion`."""
    answers = _answers(payload)
    echo = context.notes.get(_ECHO)
    prompt_of_choice = context.notes.get(_PROMPT_OF_CHOICE, [0] * len(answers))
    choices = []
    generated = 0
    for index, answer in enumerate(answers):
        text, finish_reason, tokens = choice_text(answer, context.notes.get(_STOPS, ()))
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


@mapper(OPENAI_CHAT, TGI_GENERATE, needs_prompter=True)
def chatReqOpenAItoTGI(payload: dict, endpoint: Endpoint, context: MapperContext) -> Any:
    """An OpenAI chat request -> TGI /generate request(s), the prompt built by the endpoint's prompter."""
    tools, prompt, prompt_stops = _prompt(payload, endpoint, context)
    stream = _streamed(payload, context)
    if endpoint.reasoning_parser is not None:
        context.notes[_STARTS_IN_REASONING] = REASONING_PARSERS[endpoint.reasoning_parser].starts_inside(prompt)
    max_stops = context.target_info.max_stop_sequences
    request = tgi_request(_without_tools(payload), endpoint.defaults, prompt_stops, stream=stream, max_stops=max_stops)
    parser = endpoint.tool_parser if tools else None
    tool_choice = payload.get("tool_choice")
    if tools and (parser == GRAMMAR or tool_choice == "required" or isinstance(tool_choice, dict)):
        # A call the client forces is forced by TGI's grammar, whatever the model's own format.
        if payload.get("response_format") is not None:
            raise invalid("'response_format' cannot be combined with tools on this endpoint", "response_format")
        for copy in request.copies:
            copy["grammar"] = tool_grammar(tools, tool_choice)
        parser = GRAMMAR
    context.notes[_STOPS] = request.stops
    if parser is not None:
        context.notes[_TOOL_PARSER] = parser
        context.notes[_TOOLS] = tools or []
    context.notes[_ONE_CALL] = payload.get("parallel_tool_calls") is False
    if stream:
        if len(request.copies) > 1:
            raise invalid("streaming is supported for n = 1", "n")
        return Streamed({"inputs": prompt, "parameters": request.copies[0]})
    return _one_or_many([{"inputs": prompt, "parameters": copy} for copy in request.copies])


@mapper(TGI_GENERATE, OPENAI_CHAT, streams_with=_chat_stream, on_upstream_error=_context_window)
def chatAnsTGItoOpenAI(payload: Any, endpoint: Endpoint, context: MapperContext) -> dict:
    """TGI /generate answer(s) -> an OpenAI `chat.completion`."""
    choices = []
    generated = 0
    parser = TOOL_PARSERS.get(context.notes.get(_TOOL_PARSER) or "")
    kept_specials = _kept_special_tokens(parser, endpoint)
    thinker = REASONING_PARSERS[endpoint.reasoning_parser] if endpoint.reasoning_parser else None
    inside = context.notes.get(_STARTS_IN_REASONING, False)
    for index, answer in enumerate(_answers(payload)):
        text, finish_reason, tokens = choice_text(answer, context.notes.get(_STOPS, ()), kept_specials)
        reasoning = None
        if thinker is not None:
            reasoning, text = thinker.parse(text, inside)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if parser is not None:
            content, calls = parser.parse(text, context.notes.get(_TOOLS) or ())
            if context.notes.get(_ONE_CALL):
                calls = calls[:1]  # as vLLM does: the model was asked for one call at most
            message = {"role": "assistant", "content": content}  # a grammar's no_tool answer, say
            if calls:
                message["tool_calls"] = calls
                finish_reason = "tool_calls"
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason})
        generated += completion_tokens(answer, tokens, _headers(context, index))
    prompt_tokens = header_count(context.upstream_headers, "x-prompt-tokens")
    return envelope("chat.completion", _model(context), choices, usage(prompt_tokens, generated))


@mapper(OPENAI_CHAT, TGI_TOKENIZE, needs_prompter=True)
def tokenizeReqOpenAItoTGI(payload: dict, endpoint: Endpoint, context: MapperContext) -> dict[str, Any]:
    """An OpenAI chat request -> TGI /tokenize of the prompt /generate would get: its token count."""
    _, prompt, _ = _prompt(payload, endpoint, context)
    return {"inputs": prompt}


def _prompt(payload: dict, endpoint: Endpoint, context: MapperContext) -> tuple[list[Any] | None, str, list[str]]:
    """(the tools to call, the prompt, its stop strings) of a chat request, by the endpoint's prompter."""
    if endpoint.prompter is None:  # the loader requires one (needs_prompter)
        raise ProxyError(500, "This endpoint has no prompter", code="mapper_error")
    tools = _tools(payload, endpoint)
    messages = as_markdown_images(with_images_ready(payload.get("messages"), endpoint, context))
    if endpoint.tool_parser is not None:
        messages = TOOL_PARSERS[endpoint.tool_parser].prepare_messages(messages)
    if endpoint.reasoning_parser is not None:
        messages = REASONING_PARSERS[endpoint.reasoning_parser].prepare_messages(messages)
    renders_tools = endpoint.template is not None and endpoint.template.renders_tools
    if endpoint.tool_parser == GRAMMAR and not renders_tools:
        messages = without_tool_turns(messages, tools)
    switches = _thinking_switches(payload.get("reasoning_effort"))
    if endpoint.chat_template_kwargs:
        switches = {**endpoint.chat_template_kwargs, **switches}
    prompt, stops = endpoint.prompter(messages, endpoint, tools if renders_tools else None, switches)
    return tools, prompt, list(stops)


def as_markdown_images(messages: Any) -> Any:
    """Image parts as TGI's own chat API writes them for a vision model (router/src/lib.rs,
    `From<Message> for TextMessage`): each part's text, and `![](url)` for each image, joined;
    TGI's /generate then reads the images from that markdown."""
    if not isinstance(messages, list):
        return messages
    return [
        {**message, "content": "".join(_markdown(part) for part in message["content"])}
        if isinstance(message, dict)
        and isinstance(message.get("content"), list)
        and any(isinstance(part, dict) and part.get("type") == "image_url" for part in message["content"])
        else message
        for message in messages
    ]


def _markdown(part: Any) -> str:
    if isinstance(part, dict) and part.get("type") == "image_url":
        return f"![]({image_url(part)})"
    return str(part.get("text", "")) if isinstance(part, dict) else ""


# A request's effort as the templates' own switches: Qwen3's and GLM's enable_thinking, DeepSeek
# V3.1's thinking, gpt-oss's reasoning_effort (low, medium, high). A template reads the ones it knows.
_EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}


def _thinking_switches(effort: Any) -> dict[str, Any]:
    if effort == "none":
        return {"enable_thinking": False, "thinking": False}
    if effort in _EFFORTS:
        return {"enable_thinking": True, "thinking": True, "reasoning_effort": _EFFORTS[effort]}
    if effort is not None:
        raise invalid(f"reasoning_effort: expected one of none, {', '.join(_EFFORTS)}", "reasoning_effort")
    return {}


def _tools(payload: dict, endpoint: Endpoint) -> list[Any] | None:
    """The request's tools, when the endpoint can read calls back and its template renders tools."""
    tools = payload.get("tools")
    if not tools or payload.get("tool_choice") == "none":
        return None
    if endpoint.tool_parser is None:
        raise invalid("tool calling is not supported by this endpoint (it sets no tool_parser)", "tools")
    if not isinstance(tools, list):
        raise invalid("'tools' must be a list of tools", "tools")
    renders_tools = endpoint.template is not None and endpoint.template.renders_tools
    if not renders_tools and endpoint.tool_parser != GRAMMAR:
        raise invalid("tool calling needs a chat template that renders tools (or tool_parser: grammar)", "tools")
    return tools


def _without_tools(payload: dict) -> dict:
    return {name: value for name, value in payload.items() if name not in ("tools", "tool_choice")}


def _streamed(payload: dict, context: MapperContext) -> bool:
    stream = payload.get("stream")
    if stream not in (None, True, False):
        raise invalid("'stream' must be a boolean", "stream")
    options = payload.get("stream_options")
    include_usage = options.get("include_usage") if isinstance(options, dict) else None
    if include_usage not in (None, True, False):
        raise invalid("'stream_options.include_usage' must be a boolean", "stream_options")
    context.notes[_INCLUDE_USAGE] = include_usage is True
    return stream is True


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


def _headers(context: MapperContext, index: int) -> CIMultiDictProxy[str] | None:
    return context.answer_headers[index] if index < len(context.answer_headers) else context.upstream_headers


def _model(context: MapperContext) -> str:
    model = context.body.get("model")
    if isinstance(model, str) and model:
        return model
    return context.target.name if context.target is not None else "unknown"
