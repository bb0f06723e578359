"""The plug-in contract. What a mapper or a prompter declares of itself, as a frozen spec the loader
reads (the decorators of translation/marks.py make them): a wrong combination is a config error at
start, never a failed request; a plug-in's undecorated function gets a spec that declares nothing.
And the base of stream translators, whose optional members have defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mooltiproxy.config.settings import ErrorHook, StreamTranslatorFactory
from mooltiproxy.core.errors import ProxyError, error_body


@dataclass(frozen=True, slots=True)
class MapperSpec:
    function: Callable[..., Any]
    takes: str | None = None  # the API of the payloads it takes (translation/kinds.py); None: any
    gives: str | None = None
    needs_prompter: bool = False  # a request mapper that builds a prompt: its endpoint names a `prompter`
    stream_translator: StreamTranslatorFactory | None = None  # an answer mapper's, for streamed answers
    error_hook: ErrorHook | None = None  # an answer mapper's say on the target's errors

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


@dataclass(frozen=True, slots=True)
class PrompterSpec:
    function: Callable[..., Any]
    template_kinds: tuple[str, ...] = ()  # it needs an endpoint `template:` of one of these kinds

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


class StreamTranslator:
    """Translates one streamed answer: the target's events in, the client's chunks (dicts framed as
    `data:` events, or bytes already framed) out. A subclass writes `event` and `end`, keeps
    `finished` and `complete` true once they are, and overrides what its client's API says
    otherwise: OpenAI's `data: [DONE]` end, error event and keep-alive are the defaults."""

    finished: bool = False  # nothing more to read from the target
    complete: bool = False  # the answer reached its end (rather than the target stopping early)
    usage: dict[str, Any] | None = None  # the token counts the target reported, once it has
    done: bytes = b"data: [DONE]\n\n"  # what ends the stream
    # What a quiet stream is sent: an SSE comment, which every client's parser skips.
    ping: bytes = b": keep-alive\n\n"
    frames: bool = True  # False: a link that only screens what passes, framed by the links around it
    # No link of a chain comes after this one: it may give chunks framed already, as bytes.
    last: bool = True

    def event(self, data: Any) -> list[Any]:
        raise NotImplementedError

    def end(self) -> list[Any]:
        return []

    def error_frame(self, error: ProxyError) -> bytes:
        """The event that ends a stream on an error."""
        return b"data: " + error_body(error.status, error.message, error.code) + b"\n\n"
