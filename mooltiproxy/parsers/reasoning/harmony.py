"""gpt-oss's harmony format: the answer is a run of messages, each a header (`<|channel|>` and its
channel, a recipient `to=…`, a `<|constrain|>`) then `<|message|>` and a body ended by `<|end|>`,
`<|call|>` or `<|return|>`. The `analysis` channel is reasoning; `final` is content; `commentary`
to `functions.NAME` is a tool call, written into the content as `to=functions.NAME<|message|>ARGS
<|call|>` for the gpt_oss tool parser to read; `commentary` with no recipient is visible preamble
text. On TGI the markers are special tokens, read from the answer's tokens."""

from __future__ import annotations

import re
from typing import Any

from mooltiproxy.parsers.markers import partial_marker
from mooltiproxy.parsers.reasoning.base import ReasoningParser

MESSAGE = "<|message|>"
TERMINATORS = ("<|end|>", "<|call|>", "<|return|>")
_CHANNEL = re.compile(r"<\|channel\|>\s*(\w+)")
_RECIPIENT = re.compile(r"to=([^\s<]+)")
_HEADER_STARTS = ("<|channel|>", "<|start|>")


class GptOssParser(ReasoningParser):
    name = "gpt_oss"
    special_tokens = frozenset({"<|start|>", "<|channel|>", "<|message|>", "<|constrain|>", *TERMINATORS})

    def detect(self, template_source: str) -> bool:
        return "<|channel|>" in template_source and "<|start|>assistant" in template_source

    def starts_inside(self, prompt: str) -> bool:
        return False  # every harmony message says its own channel

    def prepare_messages(self, messages: Any) -> Any:
        """Earlier reasoning as the template reads it: `thinking`, on an assistant message that
        carries no content of its own (the template refuses both on one tool call)."""
        if not isinstance(messages, list):
            return messages
        return [
            {**message, "thinking": message["reasoning_content"]}
            if isinstance(message, dict) and message.get("reasoning_content") and not message.get("content")
            else message
            for message in messages
        ]

    def stream(self, inside: bool) -> HarmonySplitter:
        return HarmonySplitter()


_HEADER, _BODY, _PLAIN = range(3)


class HarmonySplitter:
    """Streamed text in, (reasoning, content) out: a message's body is released as it comes, but for
    what may be the start of its terminator; a header is read once its `<|message|>` has come."""

    def __init__(self) -> None:
        self._state = _HEADER
        self._buffer = ""
        self._kind = "content"  # of the message being read: reasoning, content or call
        self._spoke = False  # some content message was released (the next one is set apart)

    def feed(self, text: str) -> tuple[str, str]:
        self._buffer += text
        reasoning = content = ""
        while True:
            if self._state == _HEADER:
                at = self._buffer.find(MESSAGE)
                if at < 0:
                    if self._plain():
                        self._state = _PLAIN
                        continue
                    break
                header, self._buffer = self._buffer[:at], self._buffer[at + len(MESSAGE) :]
                content += self._open(header)
                self._state = _BODY
            elif self._state == _BODY:
                found = [(self._buffer.find(end), end) for end in TERMINATORS if end in self._buffer]
                if not found:
                    held = max(partial_marker(self._buffer, end) for end in TERMINATORS)
                    body, self._buffer = (
                        self._buffer[: len(self._buffer) - held],
                        self._buffer[len(self._buffer) - held :],
                    )
                    more_reasoning, more_content = self._body(body)
                    reasoning, content = reasoning + more_reasoning, content + more_content
                    break
                at, end = min(found)
                more_reasoning, more_content = self._body(self._buffer[:at])
                reasoning, content = reasoning + more_reasoning, content + more_content
                if self._kind == "call":
                    content += "<|call|>"
                self._buffer, self._state = self._buffer[at + len(end) :], _HEADER
            else:
                content, self._buffer = content + self._buffer, ""
                break
        return reasoning, content

    def flush(self) -> tuple[str, str]:
        rest, self._buffer = self._buffer, ""
        if self._state == _BODY:
            return self._body(rest)
        if self._state == _PLAIN or (rest.strip() and not rest.lstrip().startswith("<|")):
            return "", rest
        return "", ""  # a header the answer ended in: nothing was said

    def _plain(self) -> bool:
        """Whether the answer is not in harmony at all (a model that writes plain text)."""
        start = self._buffer.lstrip()
        return bool(start) and not any(marker.startswith(start[: len(marker)]) for marker in _HEADER_STARTS)

    def _open(self, header: str) -> str:
        """What a message with this header is, and the content that announces it."""
        channel = _CHANNEL.search(header)
        recipient = _RECIPIENT.search(header)
        name = channel.group(1) if channel else "final"
        if recipient is not None and recipient.group(1).startswith("functions."):
            self._kind = "call"
            return f"to={recipient.group(1)}{MESSAGE}"
        self._kind = "reasoning" if name == "analysis" else "content"
        if self._kind == "content" and self._spoke:
            return "\n\n"  # a preamble, then the answer: two paragraphs
        return ""

    def _body(self, text: str) -> tuple[str, str]:
        if not text:
            return "", ""
        if self._kind == "reasoning":
            return text, ""
        if self._kind == "content":
            self._spoke = True
        return "", text
