"""The `<think>…</think>` families."""

from __future__ import annotations

from mooltiproxy.parsers.reasoning.base import ReasoningParser


class Qwen3Parser(ReasoningParser):
    """Qwen3 and Qwen3.5, QwQ, GLM-4.5 and 4.6, MiniMax-M2: a `<tool_call>` ends reasoning that was
    never closed (vLLM's qwen3 parser does the same)."""

    name = "qwen3"
    implicit_ends = ("<tool_call>",)

    def detect(self, template_source: str) -> bool:
        return self.start in template_source


class DeepSeekR1Parser(ReasoningParser):
    """DeepSeek-R1 and its distills, whose template opens `<think>` for the model."""

    name = "deepseek_r1"
    implicit_ends = ("<｜tool▁calls▁begin｜>",)

    def detect(self, template_source: str) -> bool:
        return self.start in template_source and "<｜Assistant｜>" in template_source
