"""Routing: target header, default target, exact paths, /v1 fallback, refused paths."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import auth, proxy_config


@pytest.fixture
def proxy(start_proxy, echo, fake_tgi):
    config = proxy_config(
        {
            "tgi": {"url": fake_tgi.url, "mapping": {"/generate": None, "/info": None, "/health/": "/health"}},
            "echo": {"url": f"{echo.url}/v1", "mapping": {"/chat/completions": None, "/models": None, "/": None}},
        },
        default="tgi",
    )
    return start_proxy(config)


def raw_request(url: str, method: str, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Sends the request target byte for byte, as no client library would normalise it."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.putrequest(method, target, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def assert_openai_error(answer: httpx.Response, status: int) -> dict:
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_default_target_and_target_header(proxy, fake_tgi, echo):
    assert httpx.get(f"{proxy.url}/info", headers=auth()).status_code == 200
    assert fake_tgi.last.path == "/info"
    answer = httpx.get(f"{proxy.url}/models", headers={**auth(), "target": "echo"})
    assert answer.status_code == 200
    assert echo.last.path == "/v1/models"
    assert "target" not in {name.lower() for name in echo.last.headers}


def test_unknown_target_is_404(proxy):
    error = assert_openai_error(httpx.get(f"{proxy.url}/info", headers={**auth(), "target": "nope"}), 404)
    assert "'nope'" in error["message"]


def test_unmapped_path_is_404(proxy, fake_tgi):
    error = assert_openai_error(httpx.get(f"{proxy.url}/metrics", headers=auth()), 404)
    assert "/metrics" in error["message"]
    assert fake_tgi.received == []


def test_trailing_slash_counts(proxy, fake_tgi):
    assert_openai_error(httpx.get(f"{proxy.url}/info/", headers=auth()), 404)
    assert_openai_error(httpx.get(f"{proxy.url}/health", headers=auth()), 404)
    assert httpx.get(f"{proxy.url}/health/", headers=auth()).status_code == 200
    assert fake_tgi.last.path == "/health"


def test_v1_prefix_falls_back_to_the_bare_path(proxy, echo):
    answer = httpx.post(f"{proxy.url}/v1/chat/completions", json={}, headers={**auth(), "target": "echo"})
    assert answer.status_code == 200
    assert echo.last.path == "/v1/chat/completions"
    # base_url=http://proxy/v1 and the original's bare base URL reach the same endpoint.
    answer = httpx.post(f"{proxy.url}/chat/completions", json={}, headers={**auth(), "target": "echo"})
    assert echo.last.path == "/v1/chat/completions"


def test_percent_encoded_path_is_matched_decoded(proxy, fake_tgi):
    status, _ = raw_request(proxy.url, "GET", "/inf%6F", auth())
    assert status == 200
    assert fake_tgi.last.path == "/info"


@pytest.mark.parametrize(
    "target",
    [
        "/generate/../metrics",
        "/./info",
        "/%2e%2e/metrics",
        "//info",
        "/generate%2Fx",
        "/generate%2fx",
        "/info%5cx",
        "/info%zz",
        "/info%ff",
    ],
)
def test_dubious_paths_are_refused(proxy, fake_tgi, target):
    status, body = raw_request(proxy.url, "GET", target, auth())
    assert status == 400, body
    assert b'"invalid_path"' in body
    assert fake_tgi.received == []


def test_query_string_is_kept(proxy, echo):
    httpx.get(f"{proxy.url}/models?limit=5&after=a%20b", headers={**auth(), "target": "echo"})
    assert echo.last.query == "limit=5&after=a%20b"
