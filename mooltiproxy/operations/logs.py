"""Logging set-up and the one access line written per request."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
from collections import deque
from functools import cache
from typing import TextIO

from mooltiproxy.serving.context import RequestContext

access_log = logging.getLogger("mooltiproxy.access")
_ACCESS_PREFIX = f" INFO    {access_log.name}: "  # what the usual format puts between the time and the message
_access_formatter: _Formatter | None = None  # set by setup_logging


# ",000" to ",999", looked up rather than formatted on every line; a fraction a hair below 1
# may still make 1000 once rounded.
_MILLISECONDS = [f",{millisecond:03d}" for millisecond in range(1000)] + [",999"]


class _Formatter(logging.Formatter):
    """The usual format; the date part is rendered once per second, not once per line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._second = -1
        self._date = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.timestamp(record.created)

    def timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._date = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return self._date + _MILLISECONDS[int((created - second) * 1000)]

    def access_line(
        self, created: float, context: RequestContext, method: str, path: str, status: int, seconds: float
    ) -> str:
        # The query string is left out on purpose: some clients put keys in it.
        target = context.target.name if context.target else "-"
        return (
            f"{self.timestamp(created)}{_ACCESS_PREFIX}{context.client_ip} client={context.client_name} "
            f'"{method} {path}" target={target} status={status} {seconds * 1000:.1f}ms'
        )


# Under load, at most one write of buffered lines to stderr per this many seconds.
_FLUSH_INTERVAL = 0.01


class _CoalescingStream:
    """stderr, written at the next event-loop turn rather than once per line, and under load at most
    once per _FLUSH_INTERVAL: the access lines of many requests then cost one write.

    Outside a running loop (start-up, shutdown) every flush is immediate.
    """

    def __init__(self, stream: TextIO):
        # sys.stderr flushes at every newline; this one waits to be told.
        self._stream = (
            io.TextIOWrapper(stream.buffer, encoding=stream.encoding, errors="backslashreplace", line_buffering=False)
            if hasattr(stream, "buffer")
            else stream
        )
        # Written since the last flush; a deque, so a line logged from another thread is never lost.
        self._lines: deque[str] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None  # where a flush is pending
        self._flushed_at = 0.0

    def write(self, text: str) -> int:
        self._lines.append(text)
        return len(text)

    def flush(self) -> None:
        # A flush already pending answers for this line too: the usual case under load, kept cheap.
        if self._loop is not None and self._loop.is_running():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush_now()
            return
        self._loop = loop
        loop.call_at(self._flushed_at + _FLUSH_INTERVAL, self._flush_now)

    def _flush_now(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._flushed_at = self._loop.time()
        self._loop = None
        lines = self._lines
        self._stream.write("".join([lines.popleft() for _ in range(len(lines))]))
        self._stream.flush()


@cache
def _stderr() -> _CoalescingStream:
    # One wrapper for the life of the process: a discarded one would close stderr with it.
    return _CoalescingStream(sys.stderr)


def setup_logging(debug: bool, json_lines: bool = False, access: bool = True) -> None:
    """`access`: one access line per request (system.log_access)."""
    # What the format does not show is not collected (the logging HOWTO's "Optimization"): the
    # caller's frame, thread, process and task names would cost more than the line itself.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _access_formatter
    formatter = _JSONFormatter() if json_lines else _Formatter()
    handler = logging.StreamHandler(_stderr())
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler], force=True)
    _access_formatter = formatter if access and access_log.isEnabledFor(logging.INFO) else None
    if debug:
        # Debug output is about the proxy's traffic, not the event loop's internals.
        logging.getLogger("asyncio").setLevel(logging.INFO)


def log_access(context: RequestContext, method: str, path: str, status: int, seconds: float) -> None:
    """The request's access line, written straight to the coalesced stderr in the format of the
    other lines: the logging module's record, lock and handler chain would cost more than the line
    itself, once per request."""
    formatter = _access_formatter
    if formatter is not None:
        stream = _stderr()
        stream.write(formatter.access_line(time.time(), context, method, path, status, seconds) + "\n")
        stream.flush()


class _JSONFormatter(_Formatter):
    """One JSON object per line; access lines carry their fields rather than a sentence."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name}
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)

    def access_line(
        self, created: float, context: RequestContext, method: str, path: str, status: int, seconds: float
    ) -> str:
        entry: dict = {"time": self.timestamp(created), "level": "INFO", "logger": access_log.name}
        entry.update(
            request_id=context.request_id,
            client_ip=context.client_ip,
            client=context.client_name,
            method=method,
            path=path,
            target=context.answered_by or (context.target.name if context.target else None),
            route=context.endpoint.incoming_path if context.endpoint else None,
            status=status,
            duration_ms=round(seconds * 1000, 3),
            upstream_ms=round(context.upstream_seconds * 1000, 3) if context.upstream_seconds is not None else None,
            prompt_tokens=context.prompt_tokens,
            completion_tokens=context.completion_tokens,
        )
        return json.dumps(entry)
