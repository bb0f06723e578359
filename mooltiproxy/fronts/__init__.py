"""The client APIs the proxy speaks, one front each: adding one is a module and a line here."""

from __future__ import annotations

from mooltiproxy.fronts.anthropic import MessagesFront
from mooltiproxy.fronts.base import Front
from mooltiproxy.fronts.embeddings import EmbeddingsFront, RerankFront
from mooltiproxy.fronts.openai import ChatCompletionsFront, CompletionsFront
from mooltiproxy.fronts.responses import ResponsesFront

FRONTS: tuple[type[Front], ...] = (
    ChatCompletionsFront,
    CompletionsFront,
    MessagesFront,
    ResponsesFront,
    EmbeddingsFront,
    RerankFront,
)
