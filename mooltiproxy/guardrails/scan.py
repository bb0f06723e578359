"""A guard's rules over a text: the matches found, masked, and a stream scanned as it comes,
holding back only what may still begin or grow a match."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mooltiproxy.guardrails.rules import Rule


@dataclass(frozen=True, slots=True)
class Found:
    start: int
    end: int
    rule: str


def findings(rules: Sequence[Rule], text: str, start: int = 0) -> list[Found]:
    """Every rule's matches beginning at `start` or after, leftmost first; of overlapping ones the
    first (and longest) wins. What comes before `start` is context only (for a `\b`)."""
    found = sorted(
        (Found(begin, end, rule.name) for rule in rules for begin, end in rule.spans(text) if begin >= start),
        key=lambda match: (match.start, -match.end),
    )
    kept: list[Found] = []
    for match in found:
        if not kept or match.start >= kept[-1].end:
            kept.append(match)
    return kept


def masked(text: str, found: Sequence[Found], mask: str) -> str:
    """The text with each match replaced by the mask (`{rule}` in it: the rule's name)."""
    parts, position = [], 0
    for match in found:
        parts += [text[position : match.start], mask.replace("{rule}", match.rule)]
        position = match.end
    parts.append(text[position:])
    return "".join(parts)


class StreamScan:
    """One guard's rules over one streamed text, fed piece by piece: what `feed` gives back is
    decided (no match can still begin in it or grow out of it), and what may be is held. The last
    character given back stays as context, so that a match after it is found as in the whole
    text (`\b` needs to see it)."""

    __slots__ = ("_rules", "_held", "_before")

    def __init__(self, rules: Sequence[Rule]):
        self._rules = rules
        self._held = ""
        self._before = ""

    def feed(self, text: str) -> tuple[str, list[Found]]:
        before = len(self._before)
        buffer = self._before + self._held + text
        cut = max(before, min(rule.hold(buffer) for rule in self._rules))
        decided = []
        for match in findings(self._rules, buffer, before):
            if match.start >= cut:
                break
            if match.end > cut:  # not whole yet: held from its start
                cut = match.start
                break
            decided.append(Found(match.start - before, match.end - before, match.rule))
        self._held = buffer[cut:]
        if cut > before:
            self._before = buffer[cut - 1]
        return buffer[before:cut], decided

    @property
    def held(self) -> int:
        return len(self._held)

    def flush(self) -> tuple[str, list[Found]]:
        """The text's end: what was held, and the matches in it."""
        before = len(self._before)
        buffer, self._held, self._before = self._before + self._held, "", ""
        found = findings(self._rules, buffer, before)
        return buffer[before:], [Found(match.start - before, match.end - before, match.rule) for match in found]
