"""OpenAI's embeddings API, and the rerank API Cohere's and Jina's clients speak: their errors and
model lists are the base front's, OpenAI's."""

from __future__ import annotations

from mooltiproxy.fronts.base import Front
from mooltiproxy.translation.kinds import OPENAI_EMBEDDINGS, RERANK


class EmbeddingsFront(Front):
    kind = OPENAI_EMBEDDINGS


class RerankFront(Front):
    kind = RERANK
