"""Logging set-up and the one access line written per request."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import time
from functools import cache
from typing import TextIO

from aiohttp.http_exceptions import HttpProcessingError

access_log = logging.getLogger("mooltiproxy.access")


class _MalformedRequestFilter(logging.Filter):
    """aiohttp logs each malformed request (bad request line, oversized header...) with a traceback,
    after answering it with 400 / 431: one warning line is what an operator needs."""

    def filter(self, record: logging.LogRecord) -> bool:
        exception = record.exc_info[1] if record.exc_info else None
        if isinstance(exception, HttpProcessingError):
            record.msg = "refused a malformed request: %s"
            record.args = (exception.message.splitlines()[0] if exception.message else type(exception).__name__,)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class _Formatter(logging.Formatter):
    """The usual format; the date part is rendered once per second, not once per line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._second = -1
        self._date = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._date = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._date},{int(record.msecs):03d}"


class _CoalescingStream:
    """stderr, flushed once per event-loop turn rather than once per line.

    Under load, the access lines of all the requests one loop turn served cost one write;
    outside a running loop (start-up, shutdown) every flush is immediate.
    """

    def __init__(self, stream: TextIO):
        # sys.stderr flushes at every newline; this one waits to be told.
        self._stream = (
            io.TextIOWrapper(stream.buffer, encoding=stream.encoding, errors="backslashreplace", line_buffering=False)
            if hasattr(stream, "buffer")
            else stream
        )
        self._flush_pending = False

    def write(self, text: str) -> int:
        return self._stream.write(text)

    def flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._stream.flush()
            return
        if not self._flush_pending:
            self._flush_pending = True
            loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        self._stream.flush()


@cache
def _stderr() -> _CoalescingStream:
    # One wrapper for the life of the process: a discarded one would close stderr with it.
    return _CoalescingStream(sys.stderr)


def setup_logging(debug: bool) -> None:
    # What the format does not show is not collected (the logging HOWTO's "Optimization"): the
    # caller's frame, thread, process and task names would cost more than the line itself.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(_stderr())
    handler.setFormatter(_Formatter())
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler], force=True)
    # aiohttp's own access log is replaced by ours, which knows the target.
    logging.getLogger("aiohttp.access").disabled = True
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, _MalformedRequestFilter) for existing in server_log.filters):
        server_log.addFilter(_MalformedRequestFilter())
    if debug:
        # Debug output is about the proxy's traffic, not the event loop's internals.
        logging.getLogger("asyncio").setLevel(logging.INFO)


def log_access(
    client_ip: str, client_name: str, method: str, path: str, target: str, status: int, seconds: float
) -> None:
    # The query string is left out on purpose: some clients put keys in it.
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            f'{client_ip} client={client_name} "{method} {path}" target={target} status={status} {seconds * 1000:.1f}ms'
        )
