"""Logging set-up and the one access line written per request."""

from __future__ import annotations

import logging
import sys

access_log = logging.getLogger("mooltiproxy.access")


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    # aiohttp's own access log is replaced by ours, which knows the target.
    logging.getLogger("aiohttp.access").disabled = True
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
