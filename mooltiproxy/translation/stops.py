"""Stop strings the proxy enforces itself, beyond those a target takes (TGI takes 4): the text is
cut at the first one, in a whole answer or as a stream comes."""

from __future__ import annotations

from collections.abc import Sequence


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the first stop string, and whether one was found.

    A target leaves the stop sequence at the end of its text (TGI does); stops beyond the target's
    limit may appear anywhere, since only the proxy enforces them.
    """
    cut = -1
    for stop in stops:
        index = text.find(stop)
        if index >= 0 and (cut < 0 or index < cut):
            cut = index
    return (text[:cut], True) if cut >= 0 else (text, False)


class StopFilter:
    def __init__(self, stops: Sequence[str]):
        self._stops = [stop for stop in stops if stop]
        # What may begin each stop string at the text's end: all of it but its last character.
        self._heads = [(stop, stop[:-1]) for stop in self._stops]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text that can be released now."""
        if self.stopped or not text:
            return ""
        buffer = self._pending + text if self._pending else text
        for stop in self._stops:
            if stop in buffer:
                before, _ = cut_at_stop(buffer, self._stops)
                self.stopped = True
                self._pending = ""
                return before
        held = self._held_back(buffer) if self._stops else 0
        if not held:
            self._pending = ""
            return buffer
        self._pending = buffer[len(buffer) - held :]
        return buffer[: len(buffer) - held]

    def flush(self) -> str:
        rest, self._pending = ("" if self.stopped else self._pending), ""
        return rest

    def _held_back(self, buffer: str) -> int:
        """Length of the longest end of the (non-empty) buffer that begins a stop string: the text
        that may yet become one."""
        held = 0
        last = buffer[-1]
        for stop, head in self._heads:
            if last not in head:  # the usual case, one test per token: no end of the buffer begins it
                continue
            for length in range(min(len(stop) - 1, len(buffer)), held, -1):
                if buffer.endswith(stop[:length]):
                    held = length
                    break
        return held
