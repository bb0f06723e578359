"""Answer guards over a stream: each streamed text (a choice's content, its reasoning, a tool
call's arguments) goes through every guard in order, each holding back only what may still begin
or grow one of its matches. Held text is let go when its text ends (the stream moves on to
another text of the same choice, or the choice finishes), so nothing is lost or reordered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mooltiproxy.guardrails.guard import Guard, Hit, act, screen
from mooltiproxy.guardrails.scan import StreamScan
from mooltiproxy.guardrails.views import Slot, View


class StreamScreen:
    def __init__(self, view: View, guards: Sequence[Guard], hit: Hit):
        self._view = view
        self._guards = [guard for guard in guards if guard.on_answers and guard.rules]
        self._hit = hit
        self._scans: dict[Slot, list[StreamScan]] = {}
        self._current: dict[Any, Slot] = {}  # the text each choice is streaming
        self._last: dict[str, Any] | None = None

    def __bool__(self) -> bool:
        return bool(self._guards)

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        view, out, altered = self._view, [], False
        self._last = chunk
        for slot, (holder, key) in list(view.chunk_places(chunk)):
            current = self._current.get(slot[0])
            if current is not None and current != slot:
                out += self._let_go(current, chunk)
            self._current[slot[0]] = slot
            given = holder[key]
            released = self._feed(slot, given)
            altered = altered or released != given
            if released or key not in view.droppable:
                holder[key] = released
            else:
                del holder[key]
        for choice in view.ended(chunk):
            ending = self._current.pop(choice, None)
            if ending is None:
                continue
            rest = self._flush(ending)
            if rest and not view.add_text(chunk, ending, rest):
                out += self._made(ending, chunk, rest)  # before the chunk that ends its choice
        for holder, key in list(view.whole_places(chunk)):
            given = holder[key]
            for guard in self._guards:
                holder[key] = screen(guard, holder[key], self._hit, streamed=True)
            altered = altered or holder[key] != given
        if altered:
            view.scrub(chunk)
        return out if view.empty(chunk) else [*out, chunk]

    def end(self) -> list[dict[str, Any]]:
        """What is still held when the stream ends without finishing its choices."""
        out: list[dict[str, Any]] = []
        for slot in list(self._current.values()):
            if self._last is not None:
                out += self._let_go(slot, self._last)
        self._current.clear()
        return out

    def _let_go(self, slot: Slot, like: dict[str, Any]) -> list[dict[str, Any]]:
        rest = self._flush(slot)
        return self._made(slot, like, rest) if rest else []

    def _made(self, slot: Slot, like: dict[str, Any], text: str) -> list[dict[str, Any]]:
        """A chunk of its own for held text, with the envelope of another."""
        chunk = self._view.text_chunk(like, slot)
        return [chunk] if chunk is not None and self._view.add_text(chunk, slot, text) else []

    def _scans_of(self, slot: Slot) -> list[StreamScan]:
        scans = self._scans.get(slot)
        if scans is None:
            scans = self._scans[slot] = [StreamScan(guard.rules) for guard in self._guards]
        return scans

    def _feed(self, slot: Slot, text: str) -> str:
        for guard, scan in zip(self._guards, self._scans_of(slot), strict=True):
            text = act(guard, *scan.feed(text), self._hit, streamed=True)
        return text

    def _flush(self, slot: Slot) -> str:
        text = ""
        for guard, scan in zip(self._guards, self._scans.pop(slot, ()), strict=True):
            decided = act(guard, *scan.feed(text), self._hit, streamed=True)
            text = decided + act(guard, *scan.flush(), self._hit, streamed=True)
        return text
