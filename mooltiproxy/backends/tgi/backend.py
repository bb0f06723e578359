"""Hugging Face TGI as a backend: its /info."""

from __future__ import annotations

from typing import Any

from mooltiproxy.backends.base import Backend
from mooltiproxy.config.settings import TargetInfo


class TGIBackend(Backend):
    name = "tgi"
    info_path = "/info"

    @staticmethod
    def read_info(body: Any) -> TargetInfo | None:
        total = body.get("max_total_tokens")
        if not isinstance(total, int):
            return None
        stops = body.get("max_stop_sequences")
        model_id = body.get("model_id")
        return TargetInfo(
            model_id=model_id if isinstance(model_id, str) else None,
            context_length=total,
            max_stop_sequences=stops if isinstance(stops, int) else None,
            source=TGIBackend.info_path,
        )
