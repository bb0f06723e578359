"""system.workers: several processes on one port, sharing connections evenly, and bans and strikes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import yaml

from mooltiproxy.core.shared_file import open_shared_file

from conftest import auth, proxy_config, wait_for_log


def worker_pids(proxy) -> list[int]:
    children = Path(f"/proc/{proxy.process.pid}/task/{proxy.process.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_workers_share_the_port_and_the_bans(start_proxy, fake_tgi):
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}},
        system={"workers": 2},
        cerbere={"max_tries": 4},
    )
    proxy = start_proxy(config)
    assert len(worker_pids(proxy)) == 2
    answers = [httpx.get(f"{proxy.url}/info", headers=auth()) for _ in range(20)]
    # A new connection each time: the supervisor hands them to the workers in turn, and each worker
    # makes request ids of its own (a forked worker must not repeat its siblings' ids).
    assert {answer.status_code for answer in answers} == {200}
    request_ids = [answer.headers["X-Request-ID"] for answer in answers]
    assert len(set(request_ids)) == 20
    # Strikes add up across processes: max_tries means what it means with one process.
    statuses = [httpx.get(f"{proxy.url}/info", headers=auth("wrong")).status_code for _ in range(4)]
    assert statuses == [401] * 4
    time.sleep(1.2)  # a ban made in one process holds in all within a second
    assert {httpx.get(f"{proxy.url}/info", headers=auth()).status_code for _ in range(10)} == {403}
    assert proxy.stop() == 0


def test_connections_are_handed_to_the_workers_in_turn(start_proxy, fake_tgi):
    config = proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}}, system={"workers": 2})
    proxy = start_proxy(config)
    clients = [httpx.Client(base_url=proxy.url, headers=auth()) for _ in range(8)]
    try:
        # A request id begins with its process's own prefix: which worker served each connection.
        served = [client.get("/info").headers["X-Request-ID"][:12] for client in clients]
        again = [client.get("/info").headers["X-Request-ID"][:12] for client in clients]
    finally:
        for client in clients:
            client.close()
    assert served == again  # a kept-alive connection stays with its worker
    assert sorted(served.count(worker) for worker in set(served)) == [4, 4]


def test_a_worker_that_dies_is_replaced(start_proxy, fake_tgi):
    config = proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}}, system={"workers": 2})
    proxy = start_proxy(config)
    first = worker_pids(proxy)
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (len(worker_pids(proxy)) < 2 or first[0] in worker_pids(proxy)):
        time.sleep(0.1)
    assert len(worker_pids(proxy)) == 2 and first[0] not in worker_pids(proxy)
    wait_for_log(proxy, "worker 0 exited")
    assert all(httpx.get(f"{proxy.url}/info", headers=auth()).status_code == 200 for _ in range(6))


def test_every_worker_reloads(start_proxy, fake_tgi):
    config = proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}}, system={"workers": 2})
    proxy = start_proxy(config)
    config["targets"]["tgi"]["mapping"]["/health"] = None
    proxy.config_path.write_text(yaml.safe_dump(config))
    proxy.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while proxy.log().count("config reloaded") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proxy.log().count("config reloaded") == 2
    assert "changes only with a restart" not in proxy.log()
    assert {httpx.get(f"{proxy.url}/health", headers=auth()).status_code for _ in range(8)} == {200}


def _open_at_once(path: Path, barrier, failures) -> None:
    barrier.wait()
    try:
        for _ in range(2):  # a worker opens it twice: bans and metrics
            open_shared_file(path, ["CREATE TABLE IF NOT EXISTS t (x)"]).close()
    except sqlite3.Error as exc:
        failures.put(repr(exc))


def test_processes_starting_together_all_open_the_shared_file(tmp_path):
    """Workers start at the same moment; each must open the new file (it once failed about one
    start in ten with "database is locked")."""
    context = multiprocessing.get_context("fork")
    failures = context.Queue()
    for round_ in range(20):
        barrier = context.Barrier(4)
        path = tmp_path / f"shared{round_}.sqlite"
        processes = [context.Process(target=_open_at_once, args=(path, barrier, failures)) for _ in range(4)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(30)
    assert failures.empty(), failures.get()
