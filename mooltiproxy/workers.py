"""system.workers: N processes serving one port, supervised by this one.

The supervisor listens and accepts; each connection it accepts goes to the next worker in turn,
as a file descriptor sent over a socket pair, so that the workers share connections evenly however
few there are (a load balancer's pool of keep-alive connections, say). With SO_REUSEPORT the
kernel would hash each connection to a worker, and 32 connections split as unevenly as 81/19.

Bans and strikes are shared through the SQLite ban store: the configured ban_file, or one made
for the run (and removed after it) when there is none, so that max_tries means the same as with
one process.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import tempfile
import threading
import time
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path

from mooltiproxy.config.settings import Config
from mooltiproxy.core import accelerators
from mooltiproxy.core.errors import ConfigError
from mooltiproxy.server import serve

log = logging.getLogger("mooltiproxy")

START_TIMEOUT = 30.0
RESTART_DELAY = 1.0


def _worker(
    config: Config, master_key: str, index: int, ready: Event, channel: socket.socket, inherited: list[socket.socket]
) -> None:
    # A forked worker inherits the supervisor's handlers, which act on the supervisor's children: until
    # it serves and installs its own, a signal ends it plainly.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # And its sockets: the port, which must close when the supervisor dies, and the supervisor's ends
    # of the channels, whose closing tells a worker that nothing more will come.
    for sock in inherited:
        sock.close()
    try:
        accelerators.run(serve(config, master_key, worker=index, on_ready=ready.set, channel=channel))
    except ConfigError as error:
        log.error("worker %d: %s", index, error)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


def _listening_sockets(host: str | None, port: int) -> list[socket.socket]:
    """The port, as the single process would listen on it: every address of `host`, or all
    interfaces (IPv4 and IPv6)."""
    if host is None and socket.has_dualstack_ipv6():
        return [socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=1024)]
    found = socket.getaddrinfo(host or "0.0.0.0", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    families = dict.fromkeys((family, address) for family, _, _, _, address in found)
    return [socket.create_server(address[:2], family=family, backlog=1024) for family, address in families]


def run_workers(config: Config, master_key: str) -> int:
    count = config.system.workers
    system = config.system
    try:
        listeners = _listening_sockets(system.host, system.port)
    except OSError as exc:
        raise ConfigError([f"cannot listen on {system.host or '*'}:{system.port}: {exc.strerror or exc}"]) from None
    if system.port == 0:
        system = dataclasses.replace(system, port=listeners[0].getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="mooltiproxy-") as scratch:
        guard = config.guard
        if guard.ban_file is None:
            guard = dataclasses.replace(guard, ban_file=Path(scratch) / "bans.sqlite")
        config = dataclasses.replace(config, system=system, guard=guard)
        try:
            return _Supervisor(config, master_key, count, listeners).run()
        finally:
            for listener in listeners:
                listener.close()


class _Supervisor:
    def __init__(self, config: Config, master_key: str, count: int, listeners: list[socket.socket]):
        self._context = multiprocessing.get_context("fork")
        self._config = config
        self._master_key = master_key
        self._processes: list[BaseProcess] = []
        self._count = count
        self._stopping = False
        self._listeners = listeners
        self._channels: list[socket.socket | None] = [None] * count  # the supervisor's end, per worker

    def _spawn(self, index: int) -> tuple[BaseProcess, Event]:
        ready = self._context.Event()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        inherited = [*self._listeners, ours, *(channel for channel in self._channels if channel is not None)]
        process = self._context.Process(
            target=_worker,
            args=(self._config, self._master_key, index, ready, theirs, inherited),
            name=f"mooltiproxy-worker-{index}",
        )
        process.start()
        theirs.close()
        old, self._channels[index] = self._channels[index], ours
        if old is not None:
            old.close()
        return process, ready

    def _deal(self) -> None:
        """Accepts connections and hands each to the next worker that takes it (a thread)."""
        selector = selectors.DefaultSelector()
        for listener in self._listeners:
            selector.register(listener, selectors.EVENT_READ)
        turn = 0
        while not self._stopping:
            for key, _ in selector.select(timeout=0.5):
                try:
                    connection, _ = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue
                with connection:  # the worker has its own copy once sent
                    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    for _ in range(self._count):
                        channel, turn = self._channels[turn], (turn + 1) % self._count
                        try:
                            if channel is not None:
                                socket.send_fds(channel, [b"c"], [connection.fileno()])
                                break
                        except OSError:
                            continue  # a worker that died: the next one takes it
        selector.close()

    def run(self) -> int:
        started = [self._spawn(index) for index in range(self._count)]
        self._processes = [process for process, _ in started]
        threading.Thread(target=self._deal, name="mooltiproxy-accept", daemon=True).start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop)
        signal.signal(signal.SIGHUP, self._reload)
        deadline = time.monotonic() + START_TIMEOUT
        for process, ready in started:
            while not ready.wait(0.05):
                if not process.is_alive() or time.monotonic() > deadline:
                    self._stop()
                    self._join()
                    return 1
        system = self._config.system
        scheme = "https" if system.ssl else "http"
        log.info("%s", accelerators.description())
        host, pid = system.host or "0.0.0.0", os.getpid()
        log.info(
            "listening on %s://%s:%d (%d workers; pid %d: kill -HUP reloads)",
            scheme,
            host,
            system.port,
            self._count,
            pid,
        )
        while not self._stopping:
            for index, process in enumerate(self._processes):
                if not process.is_alive() and not self._stopping:
                    log.error("worker %d exited with %s; starting it again", index, process.exitcode)
                    time.sleep(RESTART_DELAY)
                    self._processes[index] = self._spawn(index)[0]
            time.sleep(0.2)
        self._join()
        return 0

    def _reload(self, *_: object) -> None:
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)

    def _stop(self, *_: object) -> None:
        self._stopping = True
        for process in self._processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: each worker shuts down gracefully

    def _join(self) -> None:
        for process in self._processes:
            process.join(60)
            if process.is_alive():
                process.kill()
