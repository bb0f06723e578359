"""Round-robin over a target's URLs; one that fails to connect or answer is left aside a while."""

from __future__ import annotations

import time

EJECT_SECONDS = 30.0


class Balancer:
    def __init__(self, urls: tuple[str, ...], eject_seconds: float = EJECT_SECONDS):
        self.urls = urls
        self._eject_seconds = eject_seconds
        self._next = 0
        self._ejected_until: dict[str, float] = {}

    def pick(self) -> str:
        urls = self.urls
        if len(urls) == 1:
            return urls[0]
        now = time.monotonic()
        for offset in range(len(urls)):
            index = (self._next + offset) % len(urls)
            if self._ejected_until.get(urls[index], 0.0) <= now:
                self._next = index + 1
                return urls[index]
        # All are failing: try the one whose time aside ends first.
        return min(urls, key=lambda url: self._ejected_until[url])

    def eject(self, url: str) -> None:
        if len(self.urls) > 1:
            self._ejected_until[url] = time.monotonic() + self._eject_seconds
