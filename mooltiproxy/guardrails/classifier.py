"""A classifier guard's call: the texts to a TEI /predict endpoint, in batches, the label's
score against the threshold. A classifier that fails (down, slow, a refusal, an answer of another
shape) blocks or lets through as its guard's `on_error` says, and the log says which."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import aiohttp

from mooltiproxy.guardrails.guard import Classifier

log = logging.getLogger("mooltiproxy.guards")

BATCH = 32  # TEI's default max_client_batch_size
SEGMENT = 2000  # characters a text is cut into: a classifier reads a window of tokens (512)


class ClassifierFailed(Exception):
    pass


def segments(texts: Sequence[str]) -> list[str]:
    """The texts cut into pieces the classifier reads whole, so that nothing past its window goes
    unread (TEI truncates what is longer)."""
    return [text[start : start + SEGMENT] for text in texts if text for start in range(0, len(text), SEGMENT)]


class Classifiers:
    """The HTTP client of every classifier guard, one session for the process."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def flagged(self, classifier: Classifier, texts: Sequence[str]) -> bool:
        """Whether any text scores at or above the threshold; ClassifierFailed when unanswered."""
        pieces = segments(texts)
        try:
            for start in range(0, len(pieces), BATCH):
                scores = await self._scores(classifier, pieces[start : start + BATCH])
                if any(score >= classifier.threshold for score in scores):
                    return True
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise ClassifierFailed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        return False

    async def _scores(self, classifier: Classifier, batch: list[str]) -> list[float]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {classifier.key}"} if classifier.key else None
        body = {"inputs": [[text] for text in batch], "truncate": True}
        timeout = aiohttp.ClientTimeout(total=classifier.timeout)
        async with self._session.post(classifier.url, json=body, headers=headers, timeout=timeout) as answer:
            if answer.status != 200:
                raise ValueError(f"the classifier answered {answer.status}")
            predictions = await answer.json(content_type=None)
        return [_score(prediction, classifier.label) for prediction in _batch_of(predictions, len(batch))]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _batch_of(predictions: Any, size: int) -> list[Any]:
    if not isinstance(predictions, list) or len(predictions) != size:
        raise ValueError("the classifier's answer is not one prediction per text")
    return predictions


def _score(prediction: Any, label: str) -> float:
    """The label's score in one text's predictions ([{label, score}], TEI's shape)."""
    if not isinstance(prediction, list):
        raise ValueError("the classifier's answer is not TEI's [{label, score}]")
    for entry in prediction:
        if isinstance(entry, dict) and entry.get("label") == label and isinstance(entry.get("score"), int | float):
            return float(entry["score"])
    raise ValueError(f"the classifier's answer has no label {label!r}")
