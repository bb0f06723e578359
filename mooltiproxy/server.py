"""Builds the aiohttp application and serves it until SIGINT / SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from .cors import add_allow_origin
from .errors import ConfigError
from .proxy import Proxy
from .settings import Config, SystemSettings
from .upstream import UpstreamPool

log = logging.getLogger("mooltiproxy")

# Request line and each header line; longer ones get 400 / 431 from aiohttp itself.
MAX_LINE_SIZE = 16 * 1024
MAX_FIELD_SIZE = 16 * 1024


def build_app(config: Config, master_key: str) -> web.Application:
    pool = UpstreamPool(config.targets, config.system)
    proxy = Proxy(config, master_key, pool)
    app = web.Application(client_max_size=config.system.max_body_size)
    app.router.add_route("*", "/{path:.*}", proxy.handle)
    app.on_response_prepare.append(add_allow_origin)

    async def open_pool(_: web.Application) -> None:
        await pool.open()

    async def close_pool(_: web.Application) -> None:
        await pool.close()

    app.on_startup.append(open_pool)
    app.on_cleanup.append(close_pool)
    return app


def tls_context(system: SystemSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile=system.certfile, keyfile=system.keyfile)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            [f"system.ssl: cannot load certificate '{system.certfile}' / key '{system.keyfile}': {reason}"]
        ) from None
    return context


async def serve(config: Config, master_key: str) -> None:
    """Serves until SIGINT or SIGTERM; raises ConfigError when it cannot start listening."""
    system = config.system
    ssl_context = tls_context(system) if system.ssl else None
    runner = web.AppRunner(
        build_app(config, master_key),
        access_log=None,
        handle_signals=False,
        # A client that goes away cancels its handler, which closes the upstream request at once.
        handler_cancellation=True,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host=system.host, port=system.port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            where = f"{system.host or '*'}:{system.port}"
            raise ConfigError([f"cannot listen on {where}: {exc.strerror or exc}"]) from None
        scheme = "https" if ssl_context else "http"
        for address in runner.addresses:
            host, port = address[0], address[1]
            log.info("listening on %s://%s:%d", scheme, f"[{host}]" if ":" in host else host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
