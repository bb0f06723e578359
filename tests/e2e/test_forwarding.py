"""Forwarding to the upstream: headers, bodies, status codes, timeouts, redirects, compression."""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import pytest

from conftest import KEY, auth, proxy_config, wait_for_log
from support.routes import TRANSLATED

UPSTREAM_KEY = "upstream-secret-key-abcdef0123456789"


@pytest.fixture
def tgi_proxy(start_proxy, fake_tgi):
    config = proxy_config(
        {
            "tgi": {
                "url": fake_tgi.url,
                "mapping": {"/generate": None, "/generate_stream": None, "/health": None, "/info": None},
            }
        }
    )
    return start_proxy(config)


@pytest.fixture
def echo_proxy(start_proxy, echo):
    config = proxy_config(
        {
            "echo": {
                "url": echo.url,
                "envkey": "ECHO_UPSTREAM_KEY",
                "mapping": {
                    "/echo": None,
                    "/renamed": "/echo/elsewhere",
                    "/slow": None,
                    "/drip": None,
                    "/gzip": None,
                    "/redirect/301": None,
                    "/redirect/302": None,
                    "/redirect/307": None,
                    "/status/503": None,
                },
            },
            "preserving": {
                "url": echo.url,
                "preserveMethod": True,
                "mapping": {"/redirect/301": None, "/redirect/303": None, "/redirect/308": None},
            },
            "refused": {"url": "http://127.0.0.1:9", "mapping": {"/generate": None}},
        },
        default="echo",
        system={"timeout": 1, "connect_timeout": 1},
    )
    return start_proxy(config, env={"ECHO_UPSTREAM_KEY": UPSTREAM_KEY})


def test_generate_reaches_tgi_with_the_key_and_is_refused_without(tgi_proxy, fake_tgi):
    body = {"inputs": "What is Deep Learning?", "parameters": {"max_new_tokens": 5}}
    refused = httpx.post(f"{tgi_proxy.url}/generate", json=body)
    assert refused.status_code == 401
    assert fake_tgi.received == []

    answer = httpx.post(f"{tgi_proxy.url}/generate", json=body, headers=auth())
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-generated-tokens"] == "5"
    assert answer.json() == {"generated_text": "Hello! I am a fake"}
    received = fake_tgi.last
    assert (received.method, received.path) == ("POST", "/generate")
    assert received.json() == body


def test_tgi_validation_error_is_relayed_unmasked(tgi_proxy, fake_tgi):
    answer = httpx.post(
        f"{tgi_proxy.url}/generate",
        json={"inputs": "hi", "parameters": {"temperature": 0}},
        headers=auth(),
    )
    assert answer.status_code == 422
    assert answer.json() == {
        "error": "Input validation error: `temperature` must be strictly positive",
        "error_type": "validation",
    }


def test_pass_through_stream_is_relayed_as_event_stream(tgi_proxy, fake_tgi):
    with httpx.stream(
        "POST",
        f"{tgi_proxy.url}/generate_stream",
        json={"inputs": "hi", "parameters": {"max_new_tokens": 3}},
        headers=auth(),
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/event-stream"
        events = [line for line in answer.iter_lines() if line]
    assert [json.loads(line[5:])["index"] for line in events] == [1, 2, 3]
    assert all(line.startswith("data:{") for line in events)


def test_get_routes_pass_through(tgi_proxy, fake_tgi):
    assert httpx.get(f"{tgi_proxy.url}/health", headers=auth()).status_code == 200
    info = httpx.get(f"{tgi_proxy.url}/info", headers=auth())
    assert info.json()["max_stop_sequences"] == 4
    assert fake_tgi.last.method == "GET"


def test_upstream_headers(echo_proxy, echo):
    answer = httpx.post(
        f"{echo_proxy.url}/echo?a=1&b=%2F",
        content=b'{"x": 1}',
        headers={
            **auth(),
            "Content-Type": "application/json",
            "target": "echo",
            "X-Custom": "kept",
            "OpenAI-Organization": "org-1",
            "Cookie": "client=secret",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "dropped",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic abc",
        },
    )
    assert answer.status_code == 200
    received = echo.last
    headers = {name.lower(): value for name, value in received.headers.items()}
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert KEY not in json.dumps(received.headers)
    for dropped in ("target", "cookie", "x-hop", "keep-alive", "proxy-authorization"):
        assert dropped not in headers
    assert headers["x-custom"] == "kept"
    assert headers["openai-organization"] == "org-1"
    assert headers["content-type"] == "application/json"
    assert received.query == "a=1&b=%2F"
    assert received.body == b'{"x": 1}'
    assert answer.headers["x-upstream"] == "echo"


def test_a_target_without_key_gets_no_authorization(start_proxy, echo):
    proxy = start_proxy(proxy_config({"echo": {"url": echo.url, "mapping": {"/echo": None}}}))
    assert httpx.get(f"{proxy.url}/echo", headers=auth()).status_code == 200
    assert "authorization" not in {name.lower() for name in echo.last.headers}


def test_config_key_wins_over_envkey(start_proxy, echo):
    config = proxy_config(
        {
            "echo": {
                "url": echo.url,
                "key": "from-the-file-0123456789",
                "envkey": "UNSET_VARIABLE",
                "mapping": {"/echo": None},
            }
        }
    )
    proxy = start_proxy(config)
    httpx.get(f"{proxy.url}/echo", headers=auth())
    assert echo.last.headers["Authorization"] == "Bearer from-the-file-0123456789"
    assert "from-the-file-0123456789" not in proxy.log()


def test_mapped_path_string(echo_proxy, echo):
    assert httpx.get(f"{echo_proxy.url}/renamed", headers=auth()).status_code == 200
    assert echo.last.path == "/echo/elsewhere"


def test_refused_connection_is_502_naming_the_target(echo_proxy):
    answer = httpx.post(f"{echo_proxy.url}/generate", json={}, headers={**auth(), "target": "refused"})
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert "'refused'" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    # The process keeps serving.
    assert httpx.get(f"{echo_proxy.url}/echo", headers=auth()).status_code == 200


def test_silence_longer_than_timeout_is_504(echo_proxy):
    answer = httpx.get(f"{echo_proxy.url}/slow?seconds=3", headers=auth(), timeout=10)
    assert answer.status_code == 504
    assert "'echo'" in answer.json()["error"]["message"]


def test_timeout_bounds_silence_not_total_time(echo_proxy):
    # 6 chunks 0.4 s apart: 2.4 s in all, never silent for the 1 s timeout.
    answer = httpx.get(f"{echo_proxy.url}/drip?chunks=6&gap=0.4", headers=auth(), timeout=10)
    assert answer.status_code == 200
    assert answer.text.count("chunk") == 6


def test_max_connections_bounds_requests_in_flight(start_proxy, echo):
    config = proxy_config({"echo": {"url": echo.url, "max_connections": 2, "mapping": {"/slow": None}}})
    proxy = start_proxy(config)
    url = f"{proxy.url}/slow?seconds=0.3&tag=limit"

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(headers=auth(), timeout=10) as client:
            # A request that gives up while it waits for a slot must not keep one.
            first = await asyncio.gather(
                *(client.get(url) for _ in range(3)), client.get(url, timeout=0.1), return_exceptions=True
            )
            assert isinstance(first[-1], httpx.TimeoutException)
            answers = await asyncio.gather(*(client.get(url) for _ in range(6)))
            return [answer.status_code for answer in first[:-1] + answers]

    assert asyncio.run(scenario()) == [200] * 9
    assert echo.most_in_flight["limit"] == 2


def test_upstream_status_is_relayed(echo_proxy):
    answer = httpx.get(f"{echo_proxy.url}/status/503", headers=auth())
    assert answer.status_code == 503
    assert answer.json() == {"upstream_status": 503}


@pytest.mark.parametrize("status", [301, 302])
def test_redirect_without_preserve_method_becomes_get(echo_proxy, echo, status):
    answer = httpx.post(f"{echo_proxy.url}/redirect/{status}", json={"a": 1}, headers=auth())
    assert answer.status_code == 200
    assert echo.last.path == "/echo/after-redirect"
    assert echo.last.method == "GET"


def test_redirect_307_keeps_method_anyway(echo_proxy, echo):
    answer = httpx.post(f"{echo_proxy.url}/redirect/307", json={"a": 1}, headers=auth())
    assert answer.status_code == 200
    assert (echo.last.method, echo.last.body) == ("POST", b'{"a":1}')


@pytest.mark.parametrize("status", [301, 303, 308])
def test_preserve_method_resends_method_and_body(echo_proxy, echo, status):
    answer = httpx.post(
        f"{echo_proxy.url}/redirect/{status}", json={"a": 1}, headers={**auth(), "target": "preserving"}
    )
    assert answer.status_code == 200
    assert echo.last.path == "/echo/after-redirect"
    assert (echo.last.method, echo.last.body) == ("POST", b'{"a":1}')


def test_compressed_answer_is_relayed_honestly(echo_proxy):
    # httpx asks for gzip and decodes it: the bytes and headers it got must agree.
    answer = httpx.get(f"{echo_proxy.url}/gzip", headers=auth())
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.json()["compressed"] is True
    # A client that did not ask for an encoding must not get one it cannot read.
    raw = httpx.get(f"{echo_proxy.url}/gzip", headers={**auth(), "Accept-Encoding": "identity"})
    assert raw.json()["compressed"] is True


def test_compressed_request_body_is_forwarded_decompressed(echo_proxy, echo):
    body = json.dumps({"prompt": "y" * 5000}).encode()
    answer = httpx.post(
        f"{echo_proxy.url}/echo",
        content=gzip.compress(body),
        headers={**auth(), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status_code == 200
    received = echo.last
    assert received.body == body
    headers = {name.lower(): value for name, value in received.headers.items()}
    assert "content-encoding" not in headers
    assert int(headers["content-length"]) == len(body)


def test_upstream_cookies_are_not_kept_across_clients(echo_proxy, echo):
    httpx.get(f"{echo_proxy.url}/echo", headers=auth())
    httpx.get(f"{echo_proxy.url}/echo", headers=auth())
    assert "cookie" not in {name.lower() for name in echo.last.headers}


def test_access_log_names_target_and_status_without_secrets(echo_proxy):
    httpx.get(f"{echo_proxy.url}/echo?api_key=query-secret", headers=auth())
    httpx.get(f"{echo_proxy.url}/echo", headers=auth("wrong-key-0123456789abcdef"))
    wait_for_log(echo_proxy, '"GET /echo" target=echo status=200')
    log = wait_for_log(echo_proxy, "status=401")
    for secret in (KEY, UPSTREAM_KEY, "query-secret", "wrong-key-0123456789abcdef"):
        assert secret not in log


def test_log_access_false_writes_no_access_line_and_the_metrics_still_count(start_proxy, echo):
    config = proxy_config({"echo": {"url": echo.url, "mapping": {"/echo": None}}}, system={"log_access": False})
    proxy = start_proxy(config)
    assert httpx.get(f"{proxy.url}/echo", headers=auth()).status_code == 200
    metrics = httpx.get(f"{proxy.url}/_proxy/metrics", headers=auth()).text
    assert 'mooltiproxy_requests_total{target="echo",route="/echo",status="200"} 1' in metrics
    assert "mooltiproxy.access" not in proxy.log()


def test_debug_logs_bodies(start_proxy, echo):
    config = proxy_config({"echo": {"url": echo.url, "mapping": {"/echo": None}}}, system={"debug": True})
    proxy = start_proxy(config)
    httpx.post(f"{proxy.url}/echo", json={"marker": "debug-body-marker"}, headers=auth())
    wait_for_log(proxy, "debug-body-marker")


def test_errors_name_the_target_and_what_was_tried(start_proxy, fake_tgi):
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    base = fake_tgi.url.replace("http://", "http://user:secret@") + "/v1"  # the extra /v1 of a copied URL
    config = proxy_config(
        {
            "extra_v1": {"url": base, "mapping": TRANSLATED},
            "plain_http": {"url": fake_tgi.url.replace("http:", "https:"), "mapping": TRANSLATED},
        }
    )
    proxy = start_proxy(config)
    missing = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat, headers={**auth(), "target": "extra_v1"})
    assert missing.status_code == 404
    message = missing.json()["error"]["message"]
    assert message.startswith(f"Target 'extra_v1' answered HTTP 404 to POST {fake_tgi.url}/v1/generate")
    assert "An extra /v1 is a common cause" in message
    assert "secret" not in missing.text
    tls = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat, headers={**auth(), "target": "plain_http"})
    assert tls.status_code == 502
    expected = "The TLS handshake with target 'plain_http' failed (is it an https server?)"
    assert tls.json()["error"]["message"] == expected
    assert "secret" not in proxy.log()


def test_a_relayed_answer_names_no_server_software_and_a_404_says_what_was_tried(start_proxy, fake_tgi):
    # An extra /v1 in the target's url: TGI answers 404 with an empty body.
    proxy = start_proxy(proxy_config({"tgi": {"url": f"{fake_tgi.url}/v1", "mapping": {"/generate": None}}}))
    answer = httpx.post(f"{proxy.url}/generate", json={"inputs": "x"}, headers=auth())
    assert (answer.status_code, answer.content) == (404, b"")  # relayed as it is
    assert answer.headers["server"] == "mooltiproxy"  # not the target's "Python/3.11 aiohttp/..."
    wait_for_log(proxy, f"target tgi answered 404 to POST {fake_tgi.url}/v1/generate (is its url right?")
