"""OpenAI request fields -> TGI `parameters`, for every value an OpenAI client may legally send.

Sampling follows OpenAI's semantics: an unset temperature samples at 1.0; temperature 0 or
top_p 0 (or do_sample false) means greedy decoding, where none of temperature, top_k, top_p,
typical_p is sent; top_p 1 means no nucleus filtering. Endpoint `defaults` fill what the client
left unset. Values TGI would refuse become a 400 here, with the field named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from mooltiproxy.core.errors import ProxyError

# TGI's default --max-stop-sequences, when its /info did not say; further ones are enforced by the proxy.
MAX_TGI_STOP_SEQUENCES = 4
MAX_CHOICES = 16  # bounds the upstream calls one request may cause (n, prompt lists)
# presence_penalty (additive, [-2, 2]) becomes TGI's multiplicative repetition_penalty in [0.8, 1.2].
PRESENCE_TO_REPETITION = 0.1
_UNSUPPORTED = {
    "tools": "tool calling",
    "functions": "function calling",
}


_NUMBER = "a number"
_INTEGER = "an integer"
_BOOLEAN = "a boolean"
_STRING = "a string"
_OBJECT = "an object"
# The JSON type of each field of OpenAI's completion and chat requests (and of TGI's own
# parameters, which clients may send too), checked before anything reads them: a wrong shape is a
# 400 naming the field, never a failure further on. null is allowed everywhere, as OpenAI allows it.
FIELD_TYPES: dict[str, tuple[str, ...]] = {
    "model": (_STRING,),
    "temperature": (_NUMBER,),
    "top_p": (_NUMBER,),
    "n": (_INTEGER,),
    "stream": (_BOOLEAN,),
    "stream_options": (_OBJECT,),
    "max_tokens": (_INTEGER,),
    "max_completion_tokens": (_INTEGER,),
    "presence_penalty": (_NUMBER,),
    "frequency_penalty": (_NUMBER,),
    "logit_bias": (_OBJECT,),
    "logprobs": (_BOOLEAN, _INTEGER),  # a boolean on chat, an integer on completions
    "top_logprobs": (_INTEGER,),
    "user": (_STRING,),
    "seed": (_INTEGER,),
    "response_format": (_OBJECT,),
    "best_of": (_INTEGER,),
    "echo": (_BOOLEAN,),
    "suffix": (_STRING,),
    "metadata": (_OBJECT,),
    "store": (_BOOLEAN,),
    "parallel_tool_calls": (_BOOLEAN,),
    "service_tier": (_STRING,),
    "reasoning_effort": (_STRING,),
    "top_k": (_INTEGER,),
    "typical_p": (_NUMBER,),
    "repetition_penalty": (_NUMBER,),
    "do_sample": (_BOOLEAN,),
    "truncate": (_INTEGER,),
    "watermark": (_BOOLEAN,),
    "grammar": (_OBJECT,),
}
_GRAMMAR_TYPES = ("json", "regex", "json_schema")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return _BOOLEAN
    if isinstance(value, int):
        return _INTEGER
    if isinstance(value, float):
        return _NUMBER
    if isinstance(value, str):
        return _STRING
    return _OBJECT if isinstance(value, dict) else "a list"


def check_field_types(body: Mapping[str, Any]) -> None:
    for name, types in FIELD_TYPES.items():
        value = body.get(name)
        if value is None:
            continue
        found = _json_type(value)
        if found not in types and not (found == _INTEGER and _NUMBER in types):
            raise invalid(f"'{name}' must be {' or '.join(types)}, not {found}", name)


class TGIRequest(NamedTuple):
    """The parameters of each upstream call (one per choice) and every stop string to enforce."""

    copies: list[dict[str, Any]]
    stops: list[str]


def invalid(message: str, param: str) -> ProxyError:
    return ProxyError(400, message, code="invalid_request_error", param=param)


# Each check is made only when the client sent the field: most requests carry few of them.
def _number(value: Any, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise invalid(f"'{name}' must be a number between {low} and {high}", name)


def _integer(value: Any, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f">= {low}" + (f" and <= {high}" if high is not None else "")
        raise invalid(f"'{name}' must be an integer {bounds}", name)
    return value


def _stop_list(stop: Any) -> list[str]:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        return stop
    raise invalid("'stop' must be a string or a list of strings", "stop")


def tgi_request(
    body: Mapping[str, Any],
    defaults: Mapping[str, Any],
    prompt_stops: Sequence[str] = (),
    *,
    stream: bool = False,
    max_stops: int | None = None,
) -> TGIRequest:
    get, default = body.get, defaults.get
    for field, feature in _UNSUPPORTED.items():
        if get(field):
            raise invalid(f"{feature} is not supported by this endpoint", field)
    check_field_types(body)
    _check_tgi_parameters(body)

    parameters: dict[str, Any] = {"details": True}
    temperature = get("temperature")
    if temperature is not None:
        _number(temperature, "temperature", 0, 2)
    top_p = get("top_p")
    if top_p is not None:
        _number(top_p, "top_p", 0, 1)
    greedy = temperature == 0 or top_p == 0 or get("do_sample") is False
    if greedy:
        parameters["do_sample"] = False
    else:
        parameters["do_sample"] = True
        parameters["temperature"] = temperature if temperature is not None else default("temperature", 1.0)
        if top_p is None:
            top_p = default("top_p")
        if top_p is not None and top_p < 1:
            parameters["top_p"] = top_p
        top_k = get("top_k", default("top_k"))
        if top_k is not None:
            parameters["top_k"] = top_k
        typical_p = get("typical_p", default("typical_p"))
        if typical_p is not None and typical_p != 1:  # 1: no typical filtering, which TGI says by leaving it unset
            parameters["typical_p"] = typical_p

    frequency_penalty = get("frequency_penalty")
    if frequency_penalty is None:
        frequency_penalty = default("frequency_penalty")
    else:
        _number(frequency_penalty, "frequency_penalty", -2, 2)
    if frequency_penalty:
        parameters["frequency_penalty"] = frequency_penalty
    presence_penalty = get("presence_penalty")
    if presence_penalty is not None:
        _number(presence_penalty, "presence_penalty", -2, 2)
    repetition_penalty = get("repetition_penalty")
    if repetition_penalty is None and presence_penalty:
        repetition_penalty = 1 + PRESENCE_TO_REPETITION * presence_penalty
    if repetition_penalty is None and presence_penalty is None:
        repetition_penalty = default("repetition_penalty")
    if repetition_penalty is not None and repetition_penalty != 1:
        parameters["repetition_penalty"] = repetition_penalty

    for name in ("truncate", "watermark", "grammar"):
        value = get(name, default(name))
        if value is not None:
            parameters[name] = value
    response_format = get("response_format")
    if response_format is not None:
        grammar = _grammar(response_format)
        if grammar is not None and "grammar" not in parameters:
            parameters["grammar"] = grammar

    max_tokens = get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = get("max_tokens")
        if max_tokens is None:
            max_tokens = default("max_new_tokens")
        else:
            _integer(max_tokens, "max_tokens", 1)
    else:
        _integer(max_tokens, "max_completion_tokens", 1)
    if max_tokens is not None:
        parameters["max_new_tokens"] = max_tokens

    seed = get("seed")
    if seed is None:
        seed = default("seed")
    elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise invalid("'seed' must be a non-negative integer (TGI's seed is unsigned)", "seed")

    best_of = get("best_of")
    if best_of is not None and _integer(best_of, "best_of", 1) > 1:
        if stream:
            raise invalid("'best_of' > 1 cannot be used with streaming", "best_of")
        if greedy:
            raise invalid("'best_of' > 1 needs sampling (a temperature and top_p above 0)", "best_of")
        if seed is not None:
            raise invalid("'best_of' > 1 cannot be used with a 'seed'", "best_of")
        parameters["best_of"] = best_of

    stop = get("stop")
    stops = [*_stop_list(stop), *prompt_stops] if stop is not None else prompt_stops
    stops = [stop for stop in dict.fromkeys(stops) if stop] if stops else []
    if stops:
        parameters["stop"] = stops[: max_stops or MAX_TGI_STOP_SEQUENCES]

    n = get("n")
    n = 1 if n is None else _integer(n, "n", 1, MAX_CHOICES)
    if seed is None:
        return TGIRequest([parameters, *(dict(parameters) for _ in range(n - 1))] if n > 1 else [parameters], stops)
    # Each choice its own seed, so n choices are not n copies of one answer.
    return TGIRequest([{**parameters, "seed": seed + index} for index in range(n)], stops)


def _check_tgi_parameters(body: Mapping[str, Any]) -> None:
    """The ranges of TGI's own parameters, whose types check_field_types has seen."""
    for name in ("top_k", "truncate"):
        if body.get(name) is not None:
            _integer(body[name], name, 1)
    typical_p, repetition_penalty, grammar = body.get("typical_p"), body.get("repetition_penalty"), body.get("grammar")
    if typical_p is not None and not 0 < typical_p <= 1:
        raise invalid("'typical_p' must be a number above 0 and at most 1", "typical_p")
    if repetition_penalty is not None and not repetition_penalty > 0:
        raise invalid("'repetition_penalty' must be a number above 0", "repetition_penalty")
    if grammar is not None and (grammar.get("type") not in _GRAMMAR_TYPES or "value" not in grammar):
        raise invalid(f'\'grammar\' must be {{"type": one of {", ".join(_GRAMMAR_TYPES)}, "value": ...}}', "grammar")


def _grammar(response_format: Mapping[str, Any]) -> dict[str, Any] | None:
    """OpenAI structured outputs -> TGI grammar."""
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_schema":
        json_schema = response_format.get("json_schema")
        schema = json_schema.get("schema") if isinstance(json_schema, Mapping) else None
        if isinstance(schema, Mapping) and isinstance(schema.get("properties"), Mapping):
            return {"type": "json", "value": schema}
        if isinstance(schema, Mapping):  # TGI refuses it (router/src/validation.rs): a 400 here, not its 422
            raise invalid(
                "'response_format.json_schema.schema' must have 'properties' at its root: TGI's grammar takes no other",
                "response_format",
            )
        raise invalid("'response_format.json_schema.schema' must be a JSON schema object", "response_format")
    raise invalid(
        f"response_format '{kind}' is not supported by this endpoint; use 'json_schema' with a schema",
        "response_format",
    )
