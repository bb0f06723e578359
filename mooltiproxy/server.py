"""Builds the aiohttp application and serves it until SIGINT / SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import ssl

from aiohttp import web

from . import accelerators
from .admin import Admin
from .bans import BanStore, SQLiteBanStore
from .cors import add_allow_origin
from .errors import ConfigError
from .guard import Guard
from .keys import keyring
from .proxy import Proxy
from .settings import Config, GuardSettings, SystemSettings
from .upstream import UpstreamPool

log = logging.getLogger("mooltiproxy")

# Request line and each header line; longer ones get 400 / 431 from aiohttp itself.
MAX_LINE_SIZE = 16 * 1024
MAX_FIELD_SIZE = 16 * 1024


def ban_store(settings: GuardSettings) -> BanStore:
    if settings.ban_file is not None:
        return SQLiteBanStore(settings.ban_file, settings.max_tries, settings.ban_seconds)
    return BanStore(settings.max_tries, settings.ban_seconds)


def build_app(config: Config, master_key: str) -> web.Application:
    pool = UpstreamPool(config.targets, config.system)
    store = ban_store(config.guard)
    guard = Guard(config.guard, keyring(master_key, config.clients), store)
    proxy = Proxy(config, guard, Admin(config.system.admin_prefix, store), pool)
    app = web.Application(client_max_size=config.system.max_body_size)
    app.router.add_route("*", "/{path:.*}", proxy.handle)
    app.on_response_prepare.append(add_allow_origin)

    async def open_resources(_: web.Application) -> None:
        try:
            await store.open()
        except sqlite3.Error as exc:
            raise ConfigError([f"cerbere.ban_file: cannot use '{config.guard.ban_file}': {exc}"]) from None
        await pool.open()

    async def close_resources(_: web.Application) -> None:
        await pool.close()
        await store.close()

    app.on_startup.append(open_resources)
    app.on_cleanup.append(close_resources)
    return app


def tls_context(system: SystemSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile=system.certfile, keyfile=system.keyfile)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            [
                f"system.ssl: cannot load certificate '{system.certfile}' / key '{system.keyfile}': {reason} "
                "(python -m main --gen-cert makes a self-signed pair)"
            ]
        ) from None
    if system.client_ca is not None:
        # Mutual TLS: a client without a certificate signed by this CA cannot even connect.
        try:
            context.load_verify_locations(cafile=system.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([f"system.client_ca: cannot load '{system.client_ca}': {exc}"]) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def serve(config: Config, master_key: str, worker: int | None = None, on_ready=None) -> None:
    """Serves until SIGINT or SIGTERM; raises ConfigError when it cannot start listening.

    A `worker` (one of system.workers processes) shares the port with the others (SO_REUSEPORT).
    """
    system = config.system
    ssl_context = tls_context(system) if system.ssl else None
    runner = web.AppRunner(
        build_app(config, master_key),
        access_log=None,
        handle_signals=False,
        # A connection must bring a whole request head within client_timeout (slow clients are
        # cut) and is closed after as long idle.
        keepalive_timeout=system.client_timeout,
        # A client that goes away cancels its handler, which closes the upstream request at once.
        handler_cancellation=True,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, host=system.host, port=system.port, ssl_context=ssl_context, reuse_port=worker is not None
        )
        try:
            await site.start()
        except OSError as exc:
            where = f"{system.host or '*'}:{system.port}"
            raise ConfigError([f"cannot listen on {where}: {exc.strerror or exc}"]) from None
        scheme = "https" if ssl_context else "http"
        if worker is None:
            log.info("%s", accelerators.description())
            for address in runner.addresses:
                host, port = address[0], address[1]
                log.info("listening on %s://%s:%d", scheme, f"[{host}]" if ":" in host else host, port)
        if on_ready is not None:
            on_ready()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
