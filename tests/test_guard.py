"""Cerbere: keys, strikes and bans, white and black lists, CORS."""

from __future__ import annotations

import httpx
import pytest

from conftest import KEY, auth, proxy_config, wait_for_log


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
