"""Token counts read from the end of a relayed answer, for token limits on pass-through routes.

Only the last bytes are kept. Read from them: an OpenAI-compatible `usage` object (the end of a JSON
answer, or a stream's last chunk when the client asked for `stream_options.include_usage`), else
TGI's `generated_tokens` (its stream's last event, when the client asked for details). A TGI stream
without details is counted by its token events, one per generated token. TGI's streams report no
prompt tokens.
"""

from __future__ import annotations

import json
import re

TAIL_BYTES = 16 * 1024
_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_GENERATED = re.compile(rb'"generated_tokens"\s*:\s*(\d+)')
_TOKEN_EVENT = b'"generated_text"'  # a key of every event of TGI's stream, one event per token


class UsageTail:
    def __init__(self) -> None:
        self._tail = b""
        self._token_events = 0

    def feed(self, chunk: bytes) -> None:
        # Counted in the chunk plus the end of the previous one, for a key split between them.
        overlap = self._tail[-(len(_TOKEN_EVENT) - 1) :]
        self._token_events += (overlap + chunk).count(_TOKEN_EVENT) - overlap.count(_TOKEN_EVENT)
        self._tail = (self._tail + chunk)[-TAIL_BYTES:]

    def tokens(self) -> tuple[int | None, int | None]:
        """(prompt tokens, completion tokens) as the answer reported them; None where it did not."""
        found = list(_USAGE.finditer(self._tail))
        if found:
            text = self._tail[found[-1].end() - 1 :].decode("utf-8", "replace")
            try:
                usage, _ = json.JSONDecoder().raw_decode(text)
            except ValueError:
                usage = None
            if isinstance(usage, dict):
                return _count(usage, "prompt_tokens", "input_tokens"), _count(
                    usage, "completion_tokens", "output_tokens"
                )
        generated = list(_GENERATED.finditer(self._tail))
        if generated:
            return None, int(generated[-1].group(1))
        return None, self._token_events or None


def _count(usage: dict[str, object], *names: str) -> int | None:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
