"""A Content-Length as llhttp accepted it: digits, leading zeros allowed. aiohttp's own
`content_length` is `int(value)`, which Python refuses past 4,300 digits, so 4,400 zeros before a
5 would fail a request (or an answer) that is perfectly framed."""

from __future__ import annotations

from collections.abc import Mapping

# llhttp refuses a length past 2**64 - 1, which has 20 digits: anything longer was never framed.
_MOST_DIGITS = 20


def content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Content-Length")
    if value is None:
        return None
    digits = value.strip().lstrip("0")
    return int(digits[: _MOST_DIGITS + 1]) if digits else 0
