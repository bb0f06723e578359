"""The reasoning parsers, by name: adding one is a module and a line here. `auto` picks the first
whose markers a chat template shows, in this order (DeepSeek's before the generic `<think>`)."""

from __future__ import annotations

from mooltiproxy.parsers.reasoning.base import ReasoningParser
from mooltiproxy.parsers.reasoning.harmony import GptOssParser
from mooltiproxy.parsers.reasoning.think import DeepSeekR1Parser, Qwen3Parser

REASONING_PARSERS: dict[str, ReasoningParser] = {
    parser.name: parser for parser in (GptOssParser(), DeepSeekR1Parser(), Qwen3Parser())
}


def detect(template_source: str) -> str | None:
    """The parser of the reasoning a template's model writes: what `reasoning_parser: auto` picks."""
    return next((name for name, parser in REASONING_PARSERS.items() if parser.detect(template_source)), None)
