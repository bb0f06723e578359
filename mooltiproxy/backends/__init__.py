"""The target kinds the proxy knows, one backend each, asked in this order: adding one is a module
and a line here."""

from __future__ import annotations

from mooltiproxy.backends.base import Backend
from mooltiproxy.backends.openai_compatible import CompatibleBackend
from mooltiproxy.backends.tei import TEIBackend
from mooltiproxy.backends.tgi.backend import TGIBackend

BACKENDS: tuple[type[Backend], ...] = (TGIBackend, TEIBackend, CompatibleBackend)
