"""What a reasoning parser is: one model family's way of thinking before it answers, split from the
answer in a whole text and in a stream, the same way: the stream's reasoning and content, joined,
are the whole answer's.

Where the answer starts is decided from the rendered prompt's tail, never from request flags
alone: a template that opened `<think>` makes the answer start inside reasoning; one that closed
an empty `<think></think>` (thinking off) makes it start in content. A model that opens `<think>`
itself is read either way. Reasoning ends at the end marker, or at a marker that can only begin
the answer (a tool call); an answer cut short inside reasoning is all reasoning. Blank lines around
the reasoning and at the start of the content are left out.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from mooltiproxy.parsers.markers import partial_marker


class ReasoningStream(Protocol):
    """Streamed text in, (reasoning, content) released out; `flush` at the answer's end."""

    def feed(self, text: str) -> tuple[str, str]: ...

    def flush(self) -> tuple[str, str]: ...


class ReasoningParser:
    name: ClassVar[str]
    # Its markers that are special tokens: TGI leaves those out of generated_text, so the answer is
    # read from its tokens, where these keep their text.
    special_tokens: ClassVar[frozenset[str]] = frozenset()
    start: ClassVar[str] = "<think>"
    end: ClassVar[str] = "</think>"
    # Markers that end reasoning without its end marker, and begin the content (kept in it).
    implicit_ends: ClassVar[tuple[str, ...]] = ()

    def detect(self, template_source: str) -> bool:
        """Whether a chat template makes its model reason in this format (what `auto` picks)."""
        return False

    def starts_inside(self, prompt: str) -> bool:
        """Whether the answer to this rendered prompt starts inside reasoning."""
        return prompt.rstrip().endswith(self.start)

    def prepare_messages(self, messages: Any) -> Any:
        """The conversation as its template must see it before rendering (its earlier reasoning)."""
        return messages

    def parse(self, text: str, inside: bool) -> tuple[str | None, str]:
        """(reasoning, content) of a whole answer; None when it has no reasoning."""
        splitter = self.stream(inside)
        reasoning, content = splitter.feed(text)
        more_reasoning, more_content = splitter.flush()
        return (reasoning + more_reasoning) or None, content + more_content

    def stream(self, inside: bool) -> ReasoningStream:
        return ReasoningSplitter(self.start, self.end, self.implicit_ends, inside)


_DECIDING, _INSIDE, _AFTER, _CONTENT = range(4)


class ReasoningSplitter:
    """Streamed text in, (reasoning, content) released out: only what may be the start of a marker,
    and blanks that may turn out to surround the reasoning, are held back."""

    def __init__(self, start: str, end: str, implicit_ends: tuple[str, ...], inside: bool):
        self._start = start
        self._ends = (end, *implicit_ends)
        self._end = end
        self._inside = inside
        self._state = _DECIDING
        self._buffer = ""
        self._reasoned = False  # some reasoning was released (the leading blanks are behind)

    def feed(self, text: str) -> tuple[str, str]:
        self._buffer += text
        reasoning = content = ""
        while True:
            if self._state == _DECIDING:
                rest = self._buffer.lstrip()
                if not rest or (self._start.startswith(rest) and rest != self._start):
                    break  # blanks, or what may be the start marker: not decided yet
                if rest.startswith(self._start):
                    self._buffer, self._state = rest[len(self._start) :], _INSIDE
                else:
                    self._buffer, self._state = rest, _INSIDE if self._inside else _CONTENT
            elif self._state == _INSIDE:
                released, ended = self._reasoning()
                reasoning += released
                if not ended:
                    break
            elif self._state == _AFTER:
                rest = self._buffer.lstrip()
                if not rest:
                    break
                self._buffer, self._state = rest, _CONTENT
            else:
                content, self._buffer = content + self._buffer, ""
                break
        return reasoning, content

    def _reasoning(self) -> tuple[str, bool]:
        """The reasoning the buffer releases, and whether it ended there."""
        buffer = self._buffer
        found = [(buffer.find(marker), marker) for marker in self._ends if marker in buffer]
        if found:
            at, marker = min(found)
            released = buffer[:at].rstrip()
            self._buffer = buffer[at + len(marker) :] if marker == self._end else buffer[at:]
            self._state = _AFTER
            return self._released(released), True
        held = max((partial_marker(buffer, marker) for marker in self._ends), default=0)
        released = buffer[: len(buffer) - held]
        kept = released.rstrip()
        self._buffer = released[len(kept) :] + buffer[len(buffer) - held :]
        return self._released(kept), False

    def _released(self, text: str) -> str:
        if not self._reasoned:
            text = text.lstrip()
            self._reasoned = bool(text)
        return text

    def flush(self) -> tuple[str, str]:
        """The end of the answer: what was held is reasoning when the answer ended inside it."""
        rest, self._buffer = self._buffer, ""
        state, self._state = self._state, _CONTENT
        if state == _INSIDE or (state == _DECIDING and self._inside):
            return self._released(rest.strip()), ""
        if state == _DECIDING:
            return "", rest.strip()
        return "", ""
