"""Tool calls read from a streamed answer as it comes: text is released as soon as it cannot be the
start of a call, and each call once it is whole; the result is what the whole answer would give."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mooltiproxy.translation.tgi.tool_calls import CLOSINGS, MARKERS, marked_calls, parse_tool_calls


def tool_call_filter(parser: str, tools: Sequence[Any] = ()) -> ToolCallFilter | WholeAnswerFilter:
    if parser in MARKERS:
        return ToolCallFilter(parser, tools)
    return WholeAnswerFilter(parser, hold_all=parser == "grammar")


class WholeAnswerFilter:
    """For parsers whose calls are the whole answer: an answer that may be calls (one that begins
    with `{`, or any answer under a grammar) is held to its end; any other is released as it comes,
    whatever braces come later."""

    def __init__(self, parser: str, hold_all: bool = False):
        self._parser = parser
        self._held: str | None = "" if hold_all else None  # the answer so far, while it may be calls
        self._deciding: str | None = ""  # its blank start, until a character decides; None once text

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        if self._held is not None:
            self._held += text
            return "", []
        if self._deciding is None:
            return text, []
        self._deciding += text
        start = self._deciding.lstrip().removeprefix("<|python_tag|>").lstrip()
        if not start or "<|python_tag|>".startswith(self._deciding.lstrip()):
            return "", []
        released, self._deciding = self._deciding, None
        if start.startswith("{"):
            self._held = released
            return "", []
        return released, []

    def flush(self) -> tuple[str, list[dict[str, Any]]]:
        """What is left, and the calls it turned out to be."""
        held, self._held, self._deciding = (self._held or "") + (self._deciding or ""), None, None
        content, calls = parse_tool_calls(held, self._parser)
        return content or "", calls


class ToolCallFilter:
    """Streamed text in, (text, completed calls) out: text is released as it comes, except what may
    be the start of a call marker; a call is released once its closing marker has come (for a
    parser without one, once the next call's opening marker, or the end of the answer, has)."""

    def __init__(self, parser: str, tools: Sequence[Any]):
        self._parser = parser
        self._tools = tools
        self._open = MARKERS[parser][0]
        self._closing = CLOSINGS.get(parser)
        self._buffer = ""
        self._inside = False
        self._after_call = False  # whitespace after a call is held: it is text only if more follows

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        self._buffer += text
        released = ""
        calls: list[dict[str, Any]] = []
        while True:
            if not self._inside:
                start = self._buffer.find(self._open)
                if start < 0:
                    held = _held_back(self._buffer, self._open)
                    released += self._buffer[: len(self._buffer) - held]
                    self._buffer = self._buffer[len(self._buffer) - held :]
                    break
                released += self._buffer[:start]
                self._buffer, self._inside = self._buffer[start + len(self._open) :], True
            bounds = self._call_end()
            if bounds is None:
                break
            end, after = bounds
            source, closing = self._buffer[:end], self._buffer[end:after]
            self._buffer = self._buffer[after:]
            self._inside = self._closing is None  # the next call has begun, where calls close no other way
            text_instead, found = self._read(source, closing)
            released, calls = released + text_instead, calls + found
        if self._after_call and released and not released.strip():
            self._buffer, released = released + self._buffer, ""
        elif released.strip():
            self._after_call = False
        return released, calls

    def _call_end(self) -> tuple[int, int] | None:
        """Where the call being read ends and where what follows its closing marker begins."""
        if self._closing is None:
            start = self._buffer.find(self._open)
            return None if start < 0 else (start, start + len(self._open))
        close = self._closing.search(self._buffer)
        return None if close is None else (close.start("end"), close.end())

    def _read(self, source: str, closing: str) -> tuple[str, list[dict[str, Any]]]:
        """The call(s) between the markers, or, when malformed, the text it stays."""
        found = marked_calls(source, self._parser, self._tools)
        if found is None:
            return self._open + source + (closing if self._closing is not None else ""), []
        self._after_call = True
        return "", found

    def flush(self) -> tuple[str, list[dict[str, Any]]]:
        """The end of the answer: a call it cut before its closing marker is still read."""
        rest, inside, self._buffer, self._inside = self._buffer, self._inside, "", False
        if inside:
            released, calls = self._read(rest, "")
            return ("" if self._after_call and not released.strip() else released), calls
        return ("" if self._after_call and not rest.strip() else rest), []


def _held_back(buffer: str, marker: str) -> int:
    """Length of the longest end of the buffer that begins the marker."""
    for length in range(min(len(marker) - 1, len(buffer)), 0, -1):
        if buffer.endswith(marker[:length]):
            return length
    return 0
