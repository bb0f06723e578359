"""What a guard looks for: rules, each a pattern RE2 runs in time linear in the text, with an
optional check of what it found (a checksum), and how much of a stream's end it must hold back
before it can tell whether a match is there.

RE2 rather than Python's `re`: a pattern written for a backtracking engine can take exponential
time on a crafted text, and the texts guards read are written by clients and models. RE2 refuses
what it cannot run in linear time (backreferences, lookaround) and patterns too large, which
`--check` reports; the rest, `(a+)+$` included, is safe to run on anything.
"""

from __future__ import annotations

import re._parser as python_patterns  # type: ignore[import-not-found]  # a pattern's longest match
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the refusal is reported once, by the config's errors
_OPTIONS.max_mem = 8 << 20  # a pattern whose program needs more is refused at load time

# Held back of a stream whose rule says nothing shorter: the longest match its guard catches there.
DEFAULT_WINDOW = 256

FLAGS = {"ignore_case": "i", "multiline": "m", "dotall": "s"}


class PatternError(ValueError):
    pass


def compile_pattern(pattern: str, flags: tuple[str, ...] = ()) -> re2._Regexp:
    """The pattern compiled by RE2, or a PatternError saying why RE2 refuses it."""
    inline = "".join(FLAGS[flag] for flag in flags)
    try:
        return re2.compile(f"(?{inline}){pattern}" if inline else pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(reason) from None


def longest_match(pattern: str) -> int | None:
    """How many characters a match of the pattern spans at most; None when that is unbounded (or
    the pattern uses RE2 syntax Python does not read)."""
    try:
        width = python_patterns.parse(pattern).getwidth()[1]
    except Exception:  # any refusal of Python's parser: RE2 has already accepted the pattern
        return None
    return width if width < python_patterns.MAXREPEAT else None


# Where the end of a streamed text may still begin or grow a match: what is held back from it.
Hold = Callable[[str], int]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pattern: re2._Regexp
    hold: Hold
    check: Callable[[str], bool] | None = None  # a match counts only when this says so

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        for found in self.pattern.finditer(text):
            if self.check is None or self.check(found.group()):
                yield found.span()


def within(window: int) -> Hold:
    """A rule whose matches span at most `window` characters: a match beginning before the last
    window + 1 characters is whole (the one more is for a boundary, `\\b`, after it)."""
    return lambda text: max(0, len(text) - window - 1)


def run_of(alphabet: frozenset[str], window: int) -> Hold:
    """A rule whose matches are made of these characters only: the run of them at the text's end
    is held back (at most `window` of it), and everything before it is decided."""

    def hold(text: str) -> int:
        start = end = len(text)
        limit = max(0, end - window - 1)
        while start > limit and text[start - 1] in alphabet:
            start -= 1
        return start

    return hold
