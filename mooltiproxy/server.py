"""The proxy's runtime (what outlives a reload, what a reload swaps) and serving until SIGINT / SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import socket
import sqlite3
import ssl
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from mooltiproxy.backends import BACKENDS
from mooltiproxy.config.declared import restart_only
from mooltiproxy.config.loader import load_config
from mooltiproxy.config.masterkey import resolve_master_key
from mooltiproxy.config.settings import MASTER, ClientKey, Config, SystemSettings
from mooltiproxy.core import accelerators
from mooltiproxy.core.errors import ConfigError
from mooltiproxy.core.metrics import Metrics, SharedMetrics
from mooltiproxy.core.sealing import Sealer
from mooltiproxy.forwarding.upstream import UpstreamPool
from mooltiproxy.fronts import FRONTS
from mooltiproxy.fronts.base import FrontServices
from mooltiproxy.guard.gate import Guard
from mooltiproxy.guard.keys import keyring
from mooltiproxy.guard.limits import Limiter
from mooltiproxy.guardrails.classifier import Classifiers
from mooltiproxy.operations.admin import Admin
from mooltiproxy.operations.admin_socket import AdminSocket
from mooltiproxy.operations.logs import setup_logging
from mooltiproxy.operations.routes import route_table
from mooltiproxy.proxy import Proxy, RoutingState, routing_state
from mooltiproxy.serving.http_server import HttpServer, check_c_parser
from mooltiproxy.state.choose import state_store
from mooltiproxy.translation.prompt_family import mismatched_routes

log = logging.getLogger("mooltiproxy")

READY_PROBE_SECONDS = 5.0  # how old a target's answer /_proxy/ready may give


class Runtime:
    """What outlives a reload (the state store, the limiter, the metrics) and what a reload swaps
    (RoutingState)."""

    def __init__(self, config: Config, master_key: str):
        self.config = config
        self.master_key = master_key
        # What clients carry for the proxy (reasoning signatures) opens with any worker's key.
        self.sealer = Sealer(master_key, b"reasoning")
        self.metrics = Metrics()
        self.store = state_store(config.system, config.guard, os.environ, self._state_error)
        self.limiter = Limiter(self.store, self.metrics)
        self.classifiers = Classifiers()  # the guards' HTTP client, which reloads keep
        # With several workers, metrics are summed across processes through the shared file.
        shared_file = config.guard.ban_file if config.system.workers > 1 else None
        self.shared_metrics = SharedMetrics(shared_file, self.metrics) if shared_file is not None else None
        self.proxy = Proxy(self._state(config, UpstreamPool(config.targets, config.system)), self.metrics)
        self._background: set[asyncio.Task[None]] = set()

    def _state(self, config: Config, pool: UpstreamPool) -> RoutingState:
        fronts = [front(FrontServices(self.store, config.system)) for front in FRONTS]
        key_headers = tuple(name for front in fronts for name in front.key_headers)
        guard = Guard(config.guard, keyring(self.master_key, config.clients), self.store, self.metrics, key_headers)
        admin = Admin(
            config.system.admin_prefix,
            self.store,
            self._metrics_snapshot,
            partial(self._limits_report, config, guard),
            self._readiness,
            route_table(config),
            [guard.described() for guard in config.guards.values()],
            config.system.metrics_public,
        )
        readers = [(backend.info_path, backend.read_info) for backend in BACKENDS]
        return routing_state(
            config, guard, admin, pool, self.metrics, self.limiter, fronts, readers, self.sealer, self.classifiers
        )

    def _readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the default target answers, and what each target said when last asked (asked
        again, for the next probe, once READY_PROBE_SECONDS old)."""
        state = self.proxy.state
        default = state.config.default_target
        targets: dict[str, Any] = {}
        for name in state.config.targets:
            info = state.infos.last_known(name, max_age=READY_PROBE_SECONDS)
            targets[name] = {
                "reachable": info.reachable,
                "model": info.model_id,
                "context_length": info.context_length,
                "default": name == default,
            }
        return targets[default]["reachable"], targets

    def _state_error(self) -> None:
        self.metrics.add("mooltiproxy_state_errors_total")

    async def _limits_report(self, config: Config, guard: Guard) -> dict[str, Any]:
        clients = [ClientKey(MASTER, b""), *config.clients]
        report = {client.name: await self.limiter.usage(client.name, guard.limits_of(client)) for client in clients}
        return {"store": self.store.name, "clients": {name: usage for name, usage in report.items() if usage}}

    async def _metrics_snapshot(self) -> dict:
        if self.shared_metrics is not None:
            return await self.shared_metrics.collect()
        return self.metrics.snapshot()

    async def open(self) -> None:
        try:
            await self.store.open()
            if self.shared_metrics is not None:
                await self.shared_metrics.open()
        except sqlite3.Error as exc:
            where = "system.state" if self.config.system.state else "cerbere.ban_file"
            path = self.config.system.state or self.config.guard.ban_file
            raise ConfigError([f"{where}: cannot use '{path}': {exc}"]) from None
        self.limiter.start()
        await self.proxy.state.pool.open()
        await self._announce(self.proxy.state)  # each target's model and context, before serving

    async def close(self) -> None:
        await self.limiter.stop()
        await self.proxy.state.pool.close()
        await self.classifiers.close()
        if self.shared_metrics is not None:
            await self.shared_metrics.close()
        await self.store.close()

    def reload(self) -> None:
        """SIGHUP: the config file read again; a valid one is swapped in, an invalid one is logged."""
        try:
            config = self._keep_restart_only(load_config(self.config.source))
            master_key, _ = resolve_master_key(config.system.masterkey, os.environ)
            if master_key != self.master_key:
                raise ConfigError(["the proxy key cannot change without a restart"])
            old_state = self.proxy.state
            new_state = self._state(config, old_state.pool.replace(config.targets, config.system))
        except ConfigError as error:
            log.error("reload refused, the running config stays: %d problem(s)", len(error.problems))
            for problem in error.problems:
                log.error("  %s", problem)
            return
        setup_logging(config.system.debug, config.system.log_format == "json", config.system.log_access)
        self.proxy.state = new_state
        self.config = config
        # Connections of changed or removed targets close once their in-flight answers are done.
        self._in_background(old_state.pool.retire(new_state.pool))
        log.info("config reloaded: %s", config.summary())
        self._in_background(self._announce(new_state))

    @staticmethod
    async def _announce(state: RoutingState) -> None:
        """One line per target (its model and context), and one per route whose prompt format is
        plainly not its model's."""
        infos = await state.infos.announce()
        for name, target in state.config.targets.items():
            for line in mismatched_routes(target, infos[name].model_id):
                log.warning("%s", line)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """A task the runtime holds until it ends (the loop keeps only weak references)."""
        self._background.add(task := asyncio.get_running_loop().create_task(work))
        task.add_done_callback(self._background.discard)

    def _keep_restart_only(self, config: Config) -> Config:
        """The reloaded config, with what only a restart changes (the listening socket, the
        processes, the state store) kept as it runs, and said."""
        running = self.config
        return dataclasses.replace(
            config,
            system=_kept_as_running(config.system, running.system, "system", running),
            guard=_kept_as_running(config.guard, running.guard, "cerbere", running),
        )


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


async def serve(
    config: Config,
    master_key: str,
    worker: int | None = None,
    on_ready: Callable[[], object] | None = None,
    channel: socket.socket | None = None,
) -> None:
    """Serves until SIGINT or SIGTERM; raises ConfigError when it cannot start listening.

    A `worker` (one of system.workers processes) listens on no port: it serves the connections its
    supervisor accepts and hands it on `channel`.
    """
    check_c_parser()
    system = config.system
    ssl_context = tls_context(system) if system.ssl else None
    runtime = Runtime(config, master_key)
    await runtime.open()
    server = HttpServer(runtime.proxy.handle, client_timeout=system.client_timeout)
    # One process answers the operator's socket: the only one, or the first worker (the others
    # share its state store).
    door = await _open_admin_socket(system.admin_socket, runtime) if not worker else None
    try:
        await _serve_until_stopped(server, runtime, ssl_context, worker, on_ready, channel)
    finally:
        # Stopping lets in-flight requests and streams finish for up to shutdown_grace.
        await server.shutdown(system.shutdown_grace)
        if door is not None:
            await door.close()
        await runtime.close()


async def _open_admin_socket(path: Path | None, runtime: Runtime) -> AdminSocket | None:
    if path is None:
        return None
    door = AdminSocket(path, runtime.store)
    try:
        await door.open()
    except OSError as exc:
        log.warning(
            "no admin socket at %s (%s): bans can be lifted through the admin API only", path, exc.strerror or exc
        )
        return None
    return door


def _tune_garbage_collector() -> None:
    """Start-up objects (modules, config, templates) are never scanned again, and the young
    generation is collected every 20,000 allocations rather than 700: a request allocates hundreds of
    short-lived objects that reference counting frees anyway (translated c=32: +15 % req/s)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def _serve_until_stopped(
    server: HttpServer,
    runtime: Runtime,
    ssl_context: ssl.SSLContext | None,
    worker: int | None,
    on_ready: Callable[[], object] | None,
    channel: socket.socket | None,
) -> None:
    system = runtime.config.system
    stop = asyncio.Event()
    try:
        if channel is not None:
            # A worker whose supervisor is gone gets no more connections: it finishes and stops.
            server.take_connections(channel, ssl_context, on_closed=stop.set)
        else:
            await server.listen(system.host, system.port, ssl_context)
    except OSError as exc:
        where = f"{system.host or '*'}:{system.port}"
        raise ConfigError([f"cannot listen on {where}: {exc.strerror or exc}"]) from None
    scheme = "https" if ssl_context else "http"
    if worker is None:
        log.info("%s", accelerators.description())
        for address in server.addresses:
            host, port = address[0], address[1]
            shown = f"[{host}]" if ":" in host else host
            log.info("listening on %s://%s:%d (pid %d: kill -HUP reloads)", scheme, shown, port, os.getpid())
    _tune_garbage_collector()
    if on_ready is not None:
        on_ready()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, runtime.reload)
    await stop.wait()
    log.info("shutting down")


def _kept_as_running(new: Any, old: Any, section: str, running: Config) -> Any:
    kept = {}
    for name in restart_only(type(new)):
        wanted, current = getattr(new, name), getattr(old, name)
        # Port 0, and a ban file made for the run's workers, were settled at start: not a change.
        settled = (name == "port" and wanted == 0) or (
            name == "ban_file" and wanted is None and running.system.workers > 1
        )
        if wanted != current and not settled:
            log.warning("reload: %s.%s changes only with a restart", section, name)
        kept[name] = current
    return dataclasses.replace(new, **kept)
