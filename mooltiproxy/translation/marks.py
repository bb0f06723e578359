"""Decorators with which a mapper or a prompter tells the loader what it needs or offers.

The loader reads the marks when it resolves the names of config.yaml, so a wrong combination is a
config error at start, never a failed request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def _marked(function: F, **marks: Any) -> F:
    function.__dict__.update(marks)
    return function


def needs_prompter(mapper: F) -> F:
    """A request mapper that builds a prompt: its endpoint must name a `prompter`."""
    return _marked(mapper, needs_prompter=True)


def streams_with(factory: Callable[..., Any]) -> Callable[[F], F]:
    """An answer mapper whose streamed answers are translated by `factory(endpoint, context)`."""
    return lambda mapper: _marked(mapper, stream_translator=factory)


def on_upstream_error(hook: Callable[..., Any]) -> Callable[[F], F]:
    """An answer mapper with a say on upstream errors: `hook(error, payload_sent, context)` returns a
    payload to send once more, or None; it may raise a ProxyError of its own."""
    return lambda mapper: _marked(mapper, on_upstream_error=hook)


def kinds(takes: str, gives: str) -> Callable[[F], F]:
    """What a mapper takes and gives (`openai.chat`, `tgi.generate`, `anthropic.messages`, ...): in a
    chain, each link must give what the next takes, and the loader checks it."""
    return lambda mapper: _marked(mapper, takes=takes, gives=gives)


def uses_template(*kinds: str) -> Callable[[F], F]:
    """A prompter that needs an endpoint `template:` of one of these kinds ('markers', 'jinja')."""
    return lambda prompter: _marked(prompter, template_kinds=kinds)
