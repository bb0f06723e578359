"""system.workers: N processes serving the same port (SO_REUSEPORT), supervised by this one.

Bans and strikes are shared through the SQLite ban store: the configured ban_file, or one made
for the run (and removed after it) when there is none, so that max_tries means the same as with
one process.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
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


def _worker(config: Config, master_key: str, index: int, ready: Event) -> None:
    # A forked worker inherits the supervisor's handlers, which act on the supervisor's children: until
    # it serves and installs its own, a signal ends it plainly.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        accelerators.run(serve(config, master_key, worker=index, on_ready=ready.set))
    except ConfigError as error:
        log.error("worker %d: %s", index, error)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


def _free_port(host: str | None) -> int:
    with socket.socket(socket.AF_INET6 if host and ":" in host else socket.AF_INET) as probe:
        probe.bind((host or "", 0))
        port: int = probe.getsockname()[1]
        return port


def run_workers(config: Config, master_key: str) -> int:
    count = config.system.workers
    system = config.system
    if system.port == 0:
        system = dataclasses.replace(system, port=_free_port(system.host))
    with tempfile.TemporaryDirectory(prefix="mooltiproxy-") as scratch:
        guard = config.guard
        if guard.ban_file is None:
            guard = dataclasses.replace(guard, ban_file=Path(scratch) / "bans.sqlite")
        config = dataclasses.replace(config, system=system, guard=guard)
        return _Supervisor(config, master_key, count).run()


class _Supervisor:
    def __init__(self, config: Config, master_key: str, count: int):
        self._context = multiprocessing.get_context("fork")
        self._config = config
        self._master_key = master_key
        self._processes: list[BaseProcess] = []
        self._count = count
        self._stopping = False

    def _spawn(self, index: int) -> tuple[BaseProcess, Event]:
        ready = self._context.Event()
        process = self._context.Process(
            target=_worker, args=(self._config, self._master_key, index, ready), name=f"mooltiproxy-worker-{index}"
        )
        process.start()
        return process, ready

    def run(self) -> int:
        started = [self._spawn(index) for index in range(self._count)]
        self._processes = [process for process, _ in started]
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
