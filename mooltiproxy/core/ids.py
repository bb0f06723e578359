"""Unique ids without a system call each: a random prefix per process, then a counter."""

from __future__ import annotations

import itertools
import os
import uuid

_prefix = ""
_counter = itertools.count()


def _start() -> None:
    # Again in every forked worker: ids made from the parent's prefix would repeat its siblings'.
    global _prefix, _counter
    _prefix, _counter = uuid.uuid4().hex[:12], itertools.count(1)


_start()
os.register_at_fork(after_in_child=_start)


def unique_id() -> str:
    """24 hex digits, unique across the proxy's processes and their lifetimes."""
    return f"{_prefix}{next(_counter):012x}"


def new_id(prefix: str) -> str:
    """An id as the API it belongs to writes them: `chatcmpl-…`, `call_…`, `msg_…`."""
    return f"{prefix}{unique_id()}"
