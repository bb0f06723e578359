"""Logging set-up and the one access line written per request."""

from __future__ import annotations

import logging
import sys

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


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
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
    access_log.info(
        '%s client=%s "%s %s" target=%s status=%d %.1fms',
        client_ip,
        client_name,
        method,
        path,
        target,
        status,
        seconds * 1000,
    )
