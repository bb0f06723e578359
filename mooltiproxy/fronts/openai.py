"""OpenAI's Chat Completions (the pivot) and legacy Completions: the base front's shapes are theirs."""

from __future__ import annotations

from mooltiproxy.fronts.base import Front
from mooltiproxy.translation.kinds import OPENAI_CHAT, OPENAI_COMPLETIONS


class ChatCompletionsFront(Front):
    kind = OPENAI_CHAT


class CompletionsFront(Front):
    kind = OPENAI_COMPLETIONS
