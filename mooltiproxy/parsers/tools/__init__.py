"""The tool parsers, by name: adding one is a module and a line here. `auto` picks the first whose
markers a chat template shows, in this order (Qwen3-Coder's before Hermes's, which they include)."""

from __future__ import annotations

from mooltiproxy.parsers.tools.base import ToolParser
from mooltiproxy.parsers.tools.gpt_oss import GptOssParser
from mooltiproxy.parsers.tools.grammar import GrammarParser
from mooltiproxy.parsers.tools.hermes import HermesParser
from mooltiproxy.parsers.tools.llama3_json import Llama3JsonParser
from mooltiproxy.parsers.tools.mistral import MistralParser
from mooltiproxy.parsers.tools.qwen3_coder import Qwen3CoderParser

TOOL_PARSERS: dict[str, ToolParser] = {
    parser.name: parser
    for parser in (
        GptOssParser(),
        MistralParser(),
        Qwen3CoderParser(),
        HermesParser(),
        Llama3JsonParser(),
        GrammarParser(),
    )
}
GRAMMAR = GrammarParser.name  # the one that constrains generation rather than reading a model's own format


def detect(template_source: str) -> str | None:
    """The parser that reads the calls a template shows its model, from its markers: what
    `tool_parser: auto` picks (None: a format no parser reads, or none at all)."""
    return next((name for name, parser in TOOL_PARSERS.items() if parser.detect(template_source)), None)
