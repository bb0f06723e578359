"""The decorators with which a mapper or a prompter declares what it takes, gives, needs or offers;
each returns the function's frozen spec (config/plugin_specs.py), still callable as the function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mooltiproxy.config.plugin_specs import MapperSpec, PrompterSpec
from mooltiproxy.config.settings import ErrorHook, StreamTranslatorFactory


def mapper(
    takes: str | None = None,
    gives: str | None = None,
    *,
    needs_prompter: bool = False,
    streams_with: StreamTranslatorFactory | None = None,
    on_upstream_error: ErrorHook | None = None,
) -> Callable[[Callable[..., Any]], MapperSpec]:
    """`takes` and `gives`: the APIs of its payloads (`openai.chat`, `tgi.generate`, ...; None: any);
    in a chain, each link must give what the next takes. `needs_prompter`: a request mapper that builds a prompt.
    `streams_with(endpoint, context)`: an answer mapper's translator of one streamed answer.
    `on_upstream_error(error, payload_sent, context)`: an answer mapper's say on the target's errors,
    a payload to send once more, or None; it may raise a ProxyError of its own."""
    return lambda function: MapperSpec(function, takes, gives, needs_prompter, streams_with, on_upstream_error)


def prompter(*template_kinds: str) -> Callable[[Callable[..., Any]], PrompterSpec]:
    """A prompter that needs an endpoint `template:` of one of these kinds ('markers', 'jinja')."""
    return lambda function: PrompterSpec(function, template_kinds)
