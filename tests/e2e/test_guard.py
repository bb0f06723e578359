"""Cerbere: keys, strikes and bans, white and black lists, CORS."""

from __future__ import annotations

import time

import httpx
import pytest
import yaml

from conftest import KEY, auth, proxy_config, run_cli, wait_for_log


def guarded_proxy(start_proxy, fake_tgi, **cerbere):
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": {"/info": None, "/generate": None}}}, cerbere=cerbere
    )
    return start_proxy(config)


def test_missing_or_wrong_key_is_401_with_www_authenticate(start_proxy, fake_tgi):
    proxy = guarded_proxy(start_proxy, fake_tgi, max_tries=10)
    for headers in ({}, auth("wrong"), {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
        answer = httpx.get(f"{proxy.url}/info", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"]["code"] == "invalid_api_key"
    assert fake_tgi.received == []
    assert httpx.get(f"{proxy.url}/info", headers={"Authorization": f"bearer {KEY}"}).status_code == 200


def test_ban_after_max_tries(start_proxy, fake_tgi):
    proxy = guarded_proxy(start_proxy, fake_tgi, max_tries=3)
    assert httpx.get(f"{proxy.url}/info", headers=auth()).status_code == 200
    statuses = [httpx.get(f"{proxy.url}/info", headers=auth("bad")).status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    banned = httpx.get(f"{proxy.url}/info", headers=auth())
    assert banned.status_code == 403
    assert banned.json()["error"]["type"] == "permission_error"
    wait_for_log(proxy, "banned")


def test_whitelisted_address_is_never_banned_but_needs_the_key(start_proxy, fake_tgi):
    proxy = guarded_proxy(start_proxy, fake_tgi, max_tries=2, whitelist=["127.0.0.0/8"])
    for _ in range(5):
        assert httpx.get(f"{proxy.url}/info", headers=auth("bad")).status_code == 401
    assert httpx.get(f"{proxy.url}/info", headers=auth()).status_code == 200


@pytest.mark.parametrize("entry", ["127.0.0.1", "127.0.0.0/24", "::ffff:127.0.0.1"])
def test_blacklisted_address_is_refused_even_with_the_key(start_proxy, fake_tgi, entry):
    proxy = guarded_proxy(start_proxy, fake_tgi, blacklist=[entry], whitelist=["127.0.0.1"])
    answer = httpx.get(f"{proxy.url}/info", headers=auth())
    assert answer.status_code == 403
    assert fake_tgi.received == []


def test_other_addresses_are_not_affected_by_the_lists(start_proxy, fake_tgi):
    proxy = guarded_proxy(start_proxy, fake_tgi, blacklist=["10.0.0.0/8", "2001:db8::/32"])
    assert httpx.get(f"{proxy.url}/info", headers=auth()).status_code == 200


def test_cors_preflight_needs_no_key_and_echoes_the_request(start_proxy, fake_tgi):
    proxy = guarded_proxy(start_proxy, fake_tgi)
    answer = httpx.options(
        f"{proxy.url}/generate",
        headers={
            "Origin": "https://chat.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, target",
        },
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://chat.example"
    assert answer.headers["access-control-allow-methods"] == "POST"
    assert answer.headers["access-control-allow-headers"] == "authorization, content-type, target"
    assert fake_tgi.received == []


def test_responses_to_cross_origin_requests_allow_the_origin(start_proxy, fake_tgi):
    proxy = guarded_proxy(start_proxy, fake_tgi)
    origin = {"Origin": "https://chat.example"}
    ok = httpx.get(f"{proxy.url}/info", headers={**auth(), **origin})
    assert ok.headers["access-control-allow-origin"] == "https://chat.example"
    refused = httpx.get(f"{proxy.url}/info", headers=origin)
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://chat.example"
    assert "access-control-allow-origin" not in httpx.get(f"{proxy.url}/info", headers=auth()).headers


def test_requests_without_a_key_are_refused_but_never_banned(start_proxy, fake_tgi):
    # What a new user's curl without the key, or Claude Code's first probes, look like.
    proxy = guarded_proxy(start_proxy, fake_tgi, max_tries=2)
    for method, headers in [("HEAD", {}), ("GET", {}), ("POST", {"Authorization": "Bearer"})] * 3:
        answer = httpx.request(method, f"{proxy.url}/generate", headers=headers)
        assert answer.status_code == 401
    assert httpx.get(f"{proxy.url}/info", headers={}).json()["error"]["message"].startswith("Missing API key")
    assert httpx.get(f"{proxy.url}/info", headers=auth()).status_code == 200
    assert "banned" not in proxy.log()


def test_a_ban_says_so_and_for_how_long(start_proxy, fake_tgi):
    proxy = guarded_proxy(start_proxy, fake_tgi, max_tries=2)  # ban_seconds left at its default
    assert [httpx.get(f"{proxy.url}/info", headers=auth("wrong")).status_code for _ in range(2)] == [401, 401]
    banned = httpx.get(f"{proxy.url}/info", headers=auth())
    assert banned.status_code == 403
    error = banned.json()["error"]
    assert error["code"] == "ip_banned"
    assert 590 <= int(banned.headers["Retry-After"]) <= 600
    assert f"banned for {banned.headers['Retry-After']} more seconds" in error["message"]


def test_a_ban_until_lifted_says_so_without_retry_after(start_proxy, fake_tgi):
    proxy = guarded_proxy(start_proxy, fake_tgi, max_tries=1, ban_seconds=0)
    assert httpx.get(f"{proxy.url}/info", headers=auth("wrong")).status_code == 401
    banned = httpx.get(f"{proxy.url}/info", headers=auth())
    assert banned.status_code == 403
    assert "Retry-After" not in banned.headers
    assert "until an operator lifts the ban" in banned.json()["error"]["message"]
    blacklisted = guarded_proxy(start_proxy, fake_tgi, blacklist=["127.0.0.1"])
    assert httpx.get(f"{blacklisted.url}/info", headers=auth()).json()["error"]["message"].endswith("blacklisted")


def lock_out(proxy) -> None:
    """Three wrong keys from 127.0.0.1: the operator's own address banned, the admin API closed."""
    for _ in range(3):
        httpx.get(f"{proxy.url}/info", headers=auth("wrong"))
    # Workers see a ban made by another within half a second (their copies of the SQLite file's).
    deadline = time.monotonic() + 3
    while any(httpx.get(f"{proxy.url}/_proxy/bans", headers=auth()).status_code != 403 for _ in range(8)):
        assert time.monotonic() < deadline, "the ban does not hold"
        time.sleep(0.1)
    assert httpx.delete(f"{proxy.url}/_proxy/bans/127.0.0.1", headers=auth()).status_code == 403


@pytest.mark.parametrize("workers", [1, 2])
def test_an_operator_locked_out_gets_back_in_with_one_command(start_proxy, fake_tgi, workers):
    proxy = start_proxy(
        proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}}, system={"workers": workers})
    )
    lock_out(proxy)
    assert "(an operator lifts it with: mooltiproxy unban 127.0.0.1)" in wait_for_log(proxy, "banned after 3")
    socket_path = proxy.config_path.parent / "run" / "mooltiproxy.sock"
    assert oct(socket_path.stat().st_mode & 0o777) == "0o600"
    assert oct(socket_path.parent.stat().st_mode & 0o777) == "0o700"
    listed = run_cli("--config", str(proxy.config_path), "bans")
    assert listed.returncode == 0 and '"address": "127.0.0.1"' in listed.stdout
    lifted = run_cli("--config", str(proxy.config_path), "unban", "127.0.0.1")
    assert (lifted.returncode, lifted.stdout.strip()) == (0, "lifted the ban of 127.0.0.1")
    # Back in, with no restart (workers see the lift within half a second, as they see a ban).
    deadline = time.monotonic() + 3
    while any(httpx.get(f"{proxy.url}/info", headers=auth()).status_code != 200 for _ in range(8)):
        assert time.monotonic() < deadline, "still locked out"
        time.sleep(0.1)
    again = run_cli("--config", str(proxy.config_path), "unban", "127.0.0.1")
    assert again.returncode == 1 and "127.0.0.1 is not banned" in again.stderr


def test_with_no_proxy_running_the_commands_act_on_a_lasting_store(start_proxy, fake_tgi, tmp_path):
    config = proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}}, cerbere={"ban_file": "bans.db"})
    proxy = start_proxy(config)
    lock_out(proxy)
    proxy.stop()
    assert run_cli("--config", str(proxy.config_path), "unban", "127.0.0.1").returncode == 0
    assert "no address is banned" in run_cli("--config", str(proxy.config_path), "bans").stdout
    # Bans in memory end with the proxy, which the command says.
    memory = tmp_path / "memory.yaml"
    memory.write_text(yaml.safe_dump(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}})))
    gone = run_cli("--config", str(memory), "bans")
    assert gone.returncode == 1 and "its bans live in its memory" in gone.stderr
    assert run_cli("--config", str(memory), "unban", "not-an-address").returncode == 2
