"""Security: client keys, bans that hold, trusted proxies, the admin API, limits, TLS."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import socket
import sqlite3
import ssl
import time

import httpx
import pytest
import yaml

from mooltiproxy.state.memory import MemoryStore
from mooltiproxy.state.sqlite import SQLiteStore
from mooltiproxy.state.store import StateStore

from conftest import KEY, auth, proxy_config, run_cli, wait_for_log
from support.echo_upstream import EchoUpstream
from support.tls import make_ca, make_client_certificate

ALICE_KEY = "alice-key-0123456789abcdefghij"
BOB_KEY = "bob-key-0123456789abcdefghijklm"


def tgi_targets(fake_tgi, echo) -> dict:
    return {
        "tgi": {"url": fake_tgi.url, "mapping": {"/info": None, "/generate": None}},
        "echo": {"url": echo.url, "mapping": {"/echo": None}},
    }


@pytest.fixture
def clients_proxy(start_proxy, fake_tgi, echo):
    config = proxy_config(
        tgi_targets(fake_tgi, echo),
        clients={
            "alice": {"envkey": "ALICE_KEY", "targets": ["tgi"]},
            "bob": {"sha256": hashlib.sha256(BOB_KEY.encode()).hexdigest()},
        },
    )
    return start_proxy(config, env={"ALICE_KEY": ALICE_KEY})


def test_named_client_keys(clients_proxy, fake_tgi):
    assert httpx.get(f"{clients_proxy.url}/info", headers=auth(ALICE_KEY)).status_code == 200
    assert httpx.get(f"{clients_proxy.url}/echo", headers={**auth(BOB_KEY), "target": "echo"}).status_code == 200
    refused = httpx.get(f"{clients_proxy.url}/echo", headers={**auth(ALICE_KEY), "target": "echo"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "target_not_allowed"
    wait_for_log(clients_proxy, "client=bob")
    log = wait_for_log(clients_proxy, "client=alice")
    assert ALICE_KEY not in log and BOB_KEY not in log


def test_a_reload_revokes_keys_and_lists_addresses_at_once(clients_proxy):
    """Keys and peers already seen are remembered, but never past a reload that changes them."""
    with httpx.Client(base_url=clients_proxy.url) as client:  # one connection, one peer
        for _ in range(3):
            assert client.get("/info", headers=auth(BOB_KEY)).status_code == 200
        config = yaml.safe_load(clients_proxy.config_path.read_text())
        del config["clients"]["bob"]
        clients_proxy.config_path.write_text(yaml.safe_dump(config))
        clients_proxy.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert client.get("/info", headers=auth(BOB_KEY)).status_code == 401
        assert client.get("/info", headers=auth(ALICE_KEY)).status_code == 200
        config["cerbere"] = {"blacklist": ["127.0.0.1"]}
        clients_proxy.config_path.write_text(yaml.safe_dump(config))
        clients_proxy.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert client.get("/info", headers=auth(ALICE_KEY)).status_code == 403


def test_admin_api_needs_the_proxy_key(clients_proxy):
    assert httpx.get(f"{clients_proxy.url}/_proxy/bans", headers=auth(BOB_KEY)).status_code == 403
    assert httpx.get(f"{clients_proxy.url}/_proxy/bans").status_code == 401
    assert httpx.get(f"{clients_proxy.url}/_proxy/bans", headers=auth()).json() == {"bans": []}


def test_health_needs_no_key_and_tells_nothing(clients_proxy, fake_tgi):
    health = httpx.get(f"{clients_proxy.url}/_proxy/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert httpx.get(f"{clients_proxy.url}/_proxy/other", headers=auth()).status_code == 404
    assert fake_tgi.received == []


def test_client_key_config_errors(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "clients:\n"
        "  master: {sha256: " + "a" * 64 + "}\n"
        "  plain: {key: visible-secret}\n"
        "  both: {envkey: X, sha256: " + "b" * 64 + "}\n"
        "  short: {sha256: abc}\n"
        "  lost: {envkey: UNSET_CLIENT_KEY, targets: [nowhere]}\n"
        "targets:\n  default: a\n  a:\n    url: http://127.0.0.1:1\n    mapping:\n      /x:\n      /_proxy/x:\n"
    )
    result = run_cli("--config", str(path), "--check")
    assert result.returncode == 1
    for expected in (
        "clients.master: 'master' names the proxy key's holder",
        "clients.plain.key: unknown key",
        "clients.both: give the key as exactly one of envkey or sha256",
        "clients.short.sha256: expected the SHA-256 of the key",
        "clients.lost.envkey: environment variable 'UNSET_CLIENT_KEY' is not set",
        "clients.lost.targets.0: unknown target 'nowhere'",
        "targets.a.mapping./_proxy/x: paths under the admin prefix /_proxy/ are the proxy's own",
    ):
        assert expected in result.stderr, result.stderr


def ban_config(fake_tgi, echo, folder=None, **cerbere) -> dict:
    cerbere = {"max_tries": 2, **cerbere}
    if folder is not None:
        cerbere["ban_file"] = str(folder / "bans.sqlite")
    return proxy_config(tgi_targets(fake_tgi, echo), cerbere=cerbere)


def get_banned(proxy, headers: dict | None = None) -> None:
    for _ in range(2):
        assert httpx.get(f"{proxy.url}/info", headers={**auth("bad-key"), **(headers or {})}).status_code == 401
    assert httpx.get(f"{proxy.url}/info", headers={**auth(), **(headers or {})}).status_code == 403


def test_ban_expires_after_ban_seconds(start_proxy, fake_tgi, echo):
    proxy = start_proxy(ban_config(fake_tgi, echo, ban_seconds=1))
    get_banned(proxy)
    time.sleep(1.2)
    assert httpx.get(f"{proxy.url}/info", headers=auth()).status_code == 200


def test_ban_file_survives_a_restart_until_lifted(start_proxy, fake_tgi, echo, tmp_path):
    config = ban_config(fake_tgi, echo, tmp_path)
    first = start_proxy(config)
    get_banned(first)
    first.stop()
    second = start_proxy(config)
    assert httpx.get(f"{second.url}/info", headers=auth()).status_code == 403


def test_admin_lifts_a_ban(start_proxy, fake_tgi, echo, tmp_path):
    config = ban_config(fake_tgi, echo, tmp_path, trusted_proxies=["127.0.0.1"], ban_seconds=0)
    proxy = start_proxy(config)
    get_banned(proxy, {"X-Forwarded-For": "203.0.113.9"})
    bans = httpx.get(f"{proxy.url}/_proxy/bans", headers=auth()).json()["bans"]
    assert [ban["address"] for ban in bans] == ["203.0.113.9"]
    assert bans[0]["until"] is None
    lifted = httpx.delete(f"{proxy.url}/_proxy/bans/203.0.113.9", headers=auth())
    assert lifted.json() == {"lifted": "203.0.113.9"}
    assert httpx.delete(f"{proxy.url}/_proxy/bans/203.0.113.9", headers=auth()).status_code == 404
    assert httpx.get(f"{proxy.url}/info", headers={**auth(), "X-Forwarded-For": "203.0.113.9"}).status_code == 200


def test_spoofed_forwarding_headers_change_nothing_from_an_untrusted_peer(start_proxy, fake_tgi, echo):
    proxy = start_proxy(ban_config(fake_tgi, echo, blacklist=["198.51.100.7"]))
    # Not a trusted proxy: the header cannot claim a blacklisted address...
    assert httpx.get(f"{proxy.url}/info", headers={**auth(), "X-Forwarded-For": "198.51.100.7"}).status_code == 200
    # ...nor dodge strikes and the ban by changing addresses.
    for index in range(2):
        httpx.get(f"{proxy.url}/info", headers={**auth("bad"), "X-Forwarded-For": f"10.0.0.{index}"})
    assert httpx.get(f"{proxy.url}/info", headers={**auth(), "X-Forwarded-For": "10.0.0.9"}).status_code == 403


def test_trusted_proxy_forwarding_headers(start_proxy, fake_tgi, echo):
    config = ban_config(fake_tgi, echo, trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"], blacklist=["198.51.100.7"])
    proxy = start_proxy(config)
    url = f"{proxy.url}/info"
    assert httpx.get(url, headers={**auth(), "X-Forwarded-For": "198.51.100.7"}).status_code == 403
    # The right-most untrusted hop is the client; what the client wrote on its left is ignored.
    assert httpx.get(url, headers={**auth(), "X-Forwarded-For": "198.51.100.7, 192.0.2.1"}).status_code == 200
    assert httpx.get(url, headers={**auth(), "X-Forwarded-For": "192.0.2.1, 198.51.100.7, 10.1.1.1"}).status_code == 403
    # Only the configured header is read: a Forwarded of the client's own cannot override it.
    spoofed = {"X-Forwarded-For": "198.51.100.7", "Forwarded": "for=198.51.100.1"}
    assert httpx.get(url, headers={**auth(), **spoofed}).status_code == 403
    # Strikes go to the forwarded address, not to the proxy in front.
    get_banned(proxy, {"X-Forwarded-For": "192.0.2.44"})
    assert httpx.get(url, headers={**auth(), "X-Forwarded-For": "192.0.2.45"}).status_code == 200
    wait_for_log(proxy, "192.0.2.44 client=-")


def test_forwarded_is_read_only_when_configured(start_proxy, fake_tgi, echo):
    config = ban_config(
        fake_tgi, echo, trusted_proxies=["127.0.0.0/8"], blacklist=["198.51.100.7"], client_address_header="Forwarded"
    )
    proxy = start_proxy(config)
    url = f"{proxy.url}/info"
    forwarded = 'for=192.0.2.60;proto=https, for="198.51.100.7:4711"'
    assert httpx.get(url, headers={**auth(), "Forwarded": forwarded}).status_code == 403
    assert httpx.get(url, headers={**auth(), "X-Forwarded-For": "198.51.100.7"}).status_code == 200


def test_no_strike_lands_on_a_trusted_proxy(start_proxy, fake_tgi, echo):
    proxy = start_proxy(ban_config(fake_tgi, echo, trusted_proxies=["127.0.0.0/8"], client_address_header="Forwarded"))
    url = f"{proxy.url}/info"
    # A hop the load balancer could not name is an unidentified client: a bucket of its own.
    get_banned(proxy, {"Forwarded": "for=unknown"})
    wait_for_log(proxy, "refused banned client unidentified")
    assert httpx.get(url, headers={**auth(), "Forwarded": "for=192.0.2.8"}).status_code == 200
    # The load balancer asking itself (no client behind it) is never struck.
    for _ in range(4):
        assert httpx.get(url, headers=auth("bad")).status_code == 401
    assert httpx.get(url, headers=auth()).status_code == 200
    bans = httpx.get(f"{proxy.url}/_proxy/bans", headers=auth()).json()["bans"]
    assert [ban["address"] for ban in bans] == ["unidentified"]


def test_strike_memory_is_bounded():
    async def flood(store: StateStore) -> None:
        await store.open()
        for index in range(500):
            await store.strike(f"10.0.{index // 256}.{index % 256}", 3, 0)
        await store.close()

    memory = MemoryStore(max_tracked=50)
    asyncio.run(flood(memory))
    assert len(memory._strikes) == 50


def test_strike_rows_are_bounded_and_shared(tmp_path):
    async def strikes(path, addresses) -> list[bool]:
        store = SQLiteStore(path, max_tracked=50)
        await store.open()
        results = [(await store.strike(address, 3, 0)).new_ban is not None for address in addresses]
        await store.close()
        return results

    path = tmp_path / "bans.sqlite"
    asyncio.run(strikes(path, [f"10.0.0.{index}" for index in range(200)]))
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM strikes").fetchone()[0] <= 51
    # Two stores (two processes) add their strikes up for the same address.
    assert asyncio.run(strikes(path, ["192.0.2.1", "192.0.2.1"])) == [False, False]
    assert asyncio.run(strikes(path, ["192.0.2.1"])) == [True]


def test_body_limits(start_proxy, fake_tgi, echo):
    config = proxy_config(tgi_targets(fake_tgi, echo), system={"max_body_size": 1000})
    proxy = start_proxy(config)
    big = {"inputs": "x" * 2000}
    answer = httpx.post(f"{proxy.url}/generate", json=big, headers=auth())
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"

    def chunks():
        for _ in range(20):
            yield b"x" * 100

    chunked = httpx.post(f"{proxy.url}/generate", content=chunks(), headers=auth())
    assert chunked.status_code == 413
    assert fake_tgi.received == []


def test_slow_clients_are_cut(start_proxy, fake_tgi, echo):
    proxy = start_proxy(proxy_config(tgi_targets(fake_tgi, echo), system={"client_timeout": 1}))
    port = int(proxy.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow_body:
        slow_body.sendall(
            f"POST /generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )
        answer = slow_body.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow_head:
        slow_head.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert slow_head.recv(4096) == b""  # closed without an answer
        assert time.monotonic() - started < 4
    assert fake_tgi.received == []


def test_oversized_headers_are_refused(start_proxy, fake_tgi, echo):
    proxy = start_proxy(proxy_config(tgi_targets(fake_tgi, echo)))
    answer = httpx.get(f"{proxy.url}/info", headers={**auth(), "X-Big": "x" * 20000})
    assert answer.status_code in (400, 431)
    assert fake_tgi.received == []


@pytest.fixture
def certificate(tmp_path):
    folder = tmp_path / "certificates"
    result = run_cli("--gen-cert", "--certfile", str(folder / "cert.pem"), "--keyfile", str(folder / "key.pem"))
    assert result.returncode == 0, result.stderr
    assert (folder / "key.pem").stat().st_mode & 0o777 == 0o600
    return folder / "cert.pem", folder / "key.pem"


def test_https_with_a_generated_certificate(start_proxy, fake_tgi, echo, certificate):
    cert, key = certificate
    config = proxy_config(tgi_targets(fake_tgi, echo), system={"ssl": True, "certfile": str(cert), "keyfile": str(key)})
    proxy = start_proxy(config)
    assert proxy.url.startswith("https://")
    verifying = ssl.create_default_context(cafile=str(cert))
    assert httpx.get(f"{proxy.url}/info", headers=auth(), verify=verifying).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{proxy.url}/info", headers=auth())  # the system's CAs do not know it


def test_gen_cert_refuses_to_overwrite(certificate):
    cert, key = certificate
    result = run_cli("--gen-cert", "--certfile", str(cert), "--keyfile", str(key))
    assert result.returncode == 1
    assert "already exists" in result.stderr


def test_mutual_tls(start_proxy, fake_tgi, echo, certificate, tmp_path):
    cert, key = certificate
    ca_cert, ca_key = make_ca(tmp_path)
    client_cert, client_key = make_client_certificate(tmp_path, ca_cert, ca_key)
    system = {"ssl": True, "certfile": str(cert), "keyfile": str(key), "client_ca": str(ca_cert)}
    proxy = start_proxy(proxy_config(tgi_targets(fake_tgi, echo), system=system))
    with_certificate = ssl.create_default_context(cafile=str(cert))
    with_certificate.load_cert_chain(str(client_cert), str(client_key))
    assert httpx.get(f"{proxy.url}/info", headers=auth(), verify=with_certificate).status_code == 200
    without = ssl.create_default_context(cafile=str(cert))
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(f"{proxy.url}/info", headers=auth(), verify=without)


def test_upstream_tls_verification(start_proxy, certificate):
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(str(cert), str(key))
    upstream = EchoUpstream(ssl_context=server_context).start()
    try:
        config = proxy_config(
            {
                "pinned": {"url": upstream.url, "verify": str(cert), "mapping": {"/echo": None}},
                "unchecked": {"url": upstream.url, "verify": False, "mapping": {"/echo": None}},
                "system_cas": {"url": upstream.url, "mapping": {"/echo": None}},
            },
            default="pinned",
        )
        proxy = start_proxy(config)
        for target, status in (("pinned", 200), ("unchecked", 200), ("system_cas", 502)):
            answer = httpx.get(f"{proxy.url}/echo", headers={**auth(), "target": target})
            assert answer.status_code == status, target
    finally:
        upstream.stop()
