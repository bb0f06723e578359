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


def findings(rules: Sequence[Rule], text: str) -> list[Found]:
    """Every rule's matches, leftmost first; of overlapping ones the first (and longest) wins."""
    found = sorted(
        (Found(start, end, rule.name) for rule in rules for start, end in rule.spans(text)),
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
    decided (no match can still begin in it or grow out of it), and what may be is held."""

    __slots__ = ("_rules", "_held")

    def __init__(self, rules: Sequence[Rule]):
        self._rules = rules
        self._held = ""

    def feed(self, text: str) -> tuple[str, list[Found]]:
        buffer = self._held + text
        cut = min(rule.hold(buffer) for rule in self._rules)
        decided = []
        for match in findings(self._rules, buffer):
            if match.start >= cut:
                break
            if match.end > cut:  # not whole yet: held from its start
                cut = match.start
                break
            decided.append(match)
        self._held = buffer[cut:]
        return buffer[:cut], decided

    def flush(self) -> tuple[str, list[Found]]:
        """The text's end: what was held, and the matches in it."""
        rest, self._held = self._held, ""
        return rest, findings(self._rules, rest)
