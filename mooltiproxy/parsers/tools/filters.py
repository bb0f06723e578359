"""Tool calls read from a streamed answer as it comes: text is released as soon as it cannot be the
start of a call, and each call once it is whole; the result is what the whole answer would give."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from mooltiproxy.parsers.markers import partial_marker

Calls = list[dict[str, Any]]  # OpenAI tool calls: {"id", "type": "function", "function": {"name", "arguments"}}


class StreamFilter(Protocol):
    """Streamed text in, (text to release, completed calls) out; `flush` at the answer's end."""

    def feed(self, text: str) -> tuple[str, Calls]: ...

    def flush(self) -> tuple[str, Calls]: ...


class WholeAnswerFilter:
    """For calls that are the whole answer: an answer that may be calls (one that begins with `{`
    after `prefix`, or any answer with `hold_all`) is held to its end and read by `parse`; any other
    is released as it comes, whatever braces come later."""

    def __init__(self, parse: Callable[[str], tuple[str | None, Calls]], prefix: str, hold_all: bool):
        self._parse = parse
        self._prefix = prefix
        self._held: str | None = "" if hold_all else None  # the answer so far, while it may be calls
        self._deciding: str | None = ""  # its blank start, until a character decides; None once text

    def feed(self, text: str) -> tuple[str, Calls]:
        if self._held is not None:
            self._held += text
            return "", []
        if self._deciding is None:
            return text, []
        self._deciding += text
        start = self._deciding.lstrip().removeprefix(self._prefix).lstrip()
        if not start or self._prefix.startswith(self._deciding.lstrip()):
            return "", []
        released, self._deciding = self._deciding, None
        if start.startswith("{"):
            self._held = released
            return "", []
        return released, []

    def flush(self) -> tuple[str, Calls]:
        """What is left, and the calls it turned out to be."""
        held, self._held, self._deciding = (self._held or "") + (self._deciding or ""), None, None
        content, calls = self._parse(held)
        return content or "", calls


class MarkedCallFilter:
    """Text is released as it comes, except what may be the start of the `opening` marker; a call is
    released once its `closing` marker has come (without one, once the next call's opening marker,
    or the end of the answer, has), read by `calls_in`."""

    def __init__(
        self,
        opening: str,
        closing: re.Pattern[str] | None,
        calls_in: Callable[[str], Calls | None],
    ):
        self._open = opening
        self._closing = closing
        self._calls_in = calls_in
        self._buffer = ""
        self._inside = False
        self._after_call = False  # whitespace after a call is held: it is text only if more follows

    def feed(self, text: str) -> tuple[str, Calls]:
        self._buffer += text
        released = ""
        calls: Calls = []
        while True:
            if not self._inside:
                start = self._buffer.find(self._open)
                if start < 0:
                    held = partial_marker(self._buffer, self._open)
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

    def _read(self, source: str, closing: str) -> tuple[str, Calls]:
        """The call(s) between the markers, or, when malformed, the text it stays."""
        found = self._calls_in(source)
        if found is None:
            return self._open + source + (closing if self._closing is not None else ""), []
        self._after_call = True
        return "", found

    def flush(self) -> tuple[str, Calls]:
        """The end of the answer: a call it cut before its closing marker is still read."""
        rest, inside, self._buffer, self._inside = self._buffer, self._inside, "", False
        if inside:
            released, calls = self._read(rest, "")
            return ("" if self._after_call and not released.strip() else released), calls
        return ("" if self._after_call and not rest.strip() else rest), []
