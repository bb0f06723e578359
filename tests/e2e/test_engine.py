"""What the engine on aiohttp guarantees beyond parsing: clients that stop reading are cut, waiting
for a target connection has a deadline, forwarding headers follow one policy, routes take only
their methods, SIGTERM ends as soon as the last request does, and the C parser is required."""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx
import yaml

from conftest import KEY, auth, proxy_config, run_cli, wait_for_log
from support.routes import TRANSLATED

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def connect(proxy, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", int(proxy.url.rsplit(":", 1)[1])))
    return sock


def drain(sock: socket.socket) -> int:
    """Reads until the proxy ends the connection; the bytes read."""
    total = 0
    try:
        while data := sock.recv(1 << 20):
            total += len(data)
    except ConnectionResetError:
        pass
    return total


def test_a_client_that_stops_reading_a_stream_is_cut_and_frees_the_target(start_proxy, echo):
    config = {"echo": {"url": echo.url, "max_connections": 1, "mapping": {"/big": None, "/echo": None}}}
    proxy = start_proxy(proxy_config(config, system={"client_timeout": 1, "queue_timeout": 10}))
    with connect(proxy, receive_buffer=4096) as stalled:
        stalled.sendall(f"GET /big?mb=200 HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
        time.sleep(3)  # the proxy's writes wait on a client that reads nothing
        # The one target connection was given back: another request is served.
        assert httpx.get(f"{proxy.url}/echo", headers=auth(), timeout=10).status_code == 200
        assert drain(stalled) < 200 * 1024 * 1024
    wait_for_log(proxy, '"GET /big" target=echo status=499')


def test_a_client_that_stops_reading_complete_answers_is_cut(start_proxy, echo):
    config = {"echo": {"url": echo.url, "mapping": {"/echo": None}}}
    proxy = start_proxy(proxy_config(config, system={"client_timeout": 1}))
    pipelined = b"GET /_proxy/health HTTP/1.1\r\nHost: p\r\n\r\n" * 30_000
    with connect(proxy, receive_buffer=4096) as stalled:
        sender = threading.Thread(target=lambda: _send_quietly(stalled, pipelined), daemon=True)
        sender.start()
        time.sleep(3)
        answered = drain(stalled)
    assert answered < 30_000 * 100  # cut long before every answer was written
    assert httpx.get(f"{proxy.url}/_proxy/health").status_code == 200


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


def test_waiting_for_a_busy_target_has_a_deadline(start_proxy, echo):
    config = {"echo": {"url": echo.url, "max_connections": 1, "mapping": {"/slow": None}}}
    proxy = start_proxy(proxy_config(config, system={"queue_timeout": 0.5}))
    first = threading.Thread(
        target=lambda: httpx.get(f"{proxy.url}/slow?seconds=3&tag=queue", headers=auth(), timeout=10)
    )
    first.start()
    time.sleep(0.5)
    answer = httpx.get(f"{proxy.url}/slow?seconds=0&tag=queue", headers=auth(), timeout=10)
    first.join()
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    error = answer.json()["error"]
    assert error["code"] == "upstream_busy" and "'echo'" in error["message"]


def test_forwarding_headers_from_an_untrusted_peer_are_replaced(start_proxy, echo):
    proxy = start_proxy(proxy_config({"echo": {"url": echo.url, "mapping": {"/echo": None}}}))
    claimed = {
        "X-Forwarded-For": "203.0.113.7",
        "Forwarded": "for=203.0.113.7",
        "X-Real-IP": "203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
    }
    assert httpx.get(f"{proxy.url}/echo", headers={**auth(), **claimed}).status_code == 200
    seen = {name.lower(): value for name, value in echo.last.headers.items()}
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-real-ip"] == "127.0.0.1"
    assert seen["forwarded"] == "for=127.0.0.1;proto=http"
    assert seen["x-forwarded-proto"] == "http"
    assert "x-forwarded-host" not in seen
    assert "203.0.113.7" not in str(seen)


def test_forwarding_headers_from_a_trusted_proxy_are_appended_to(start_proxy, echo):
    config = proxy_config(
        {"echo": {"url": echo.url, "mapping": {"/echo": None}}}, cerbere={"trusted_proxies": ["127.0.0.1"]}
    )
    proxy = start_proxy(config)
    headers = {**auth(), "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    assert httpx.get(f"{proxy.url}/echo", headers=headers).status_code == 200
    seen = {name.lower(): value for name, value in echo.last.headers.items()}
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    # A header the guard does not read is not passed on as if the proxy vouched for it.
    assert httpx.get(f"{proxy.url}/echo", headers={**headers, "Forwarded": "for=198.51.100.1"}).status_code == 200
    assert "forwarded" not in {name.lower() for name in echo.last.headers}


def test_forwarded_chain_is_appended_to_when_it_is_the_configured_header(start_proxy, echo):
    cerbere = {"trusted_proxies": ["127.0.0.1"], "client_address_header": "forwarded"}
    proxy = start_proxy(proxy_config({"echo": {"url": echo.url, "mapping": {"/echo": None}}}, cerbere=cerbere))
    headers = {**auth(), "Forwarded": "for=203.0.113.7", "X-Forwarded-For": "198.51.100.1"}
    assert httpx.get(f"{proxy.url}/echo", headers=headers).status_code == 200
    seen = {name.lower(): value for name, value in echo.last.headers.items()}
    assert seen["forwarded"] == "for=203.0.113.7, for=127.0.0.1"
    assert "x-forwarded-for" not in seen


def test_routes_take_only_their_methods(start_proxy, fake_tgi):
    mapping = {**TRANSLATED, "/generate": None, "/info": {"methods": ["GET"]}}
    proxy = start_proxy(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": mapping}}))
    chat = httpx.get(f"{proxy.url}/v1/chat/completions", headers=auth())
    assert chat.status_code == 405 and chat.headers["Allow"] == "POST"
    assert chat.json()["error"]["code"] == "method_not_allowed"
    assert httpx.post(f"{proxy.url}/v1/chat/completions", headers=auth(), json=CHAT).status_code == 200
    assert httpx.post(f"{proxy.url}/info", headers=auth()).headers["Allow"] == "GET"
    assert httpx.get(f"{proxy.url}/info", headers=auth()).status_code == 200
    for method in ("TRACE", "CONNECT"):
        with connect(proxy) as sock:
            target = "127.0.0.1:1" if method == "CONNECT" else "/generate"
            sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
            assert sock.recv(65536).split(b" ")[1] in (b"400", b"404", b"405")
    assert all(request.method not in ("TRACE", "CONNECT") for request in fake_tgi.received)


def test_sigterm_closes_idle_connections_at_once_and_exits_when_the_last_stream_ends(start_proxy, fake_tgi):
    config = {"tgi": {"url": fake_tgi.url, "mapping": TRANSLATED}}
    proxy = start_proxy(proxy_config(config, system={"shutdown_grace": 60}))
    fake_tgi.reply = "one two three four five six"
    fake_tgi.token_delay = 0.2
    with connect(proxy) as idle:
        idle.sendall(f"GET /_proxy/health HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
        assert b" 200 " in idle.recv(65536)  # kept alive, now idle
        with httpx.stream(
            "POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth()
        ) as answer:
            lines = answer.iter_lines()
            assert next(lines).startswith("data: ")
            stopped = time.monotonic()
            proxy.process.send_signal(signal.SIGTERM)
            assert idle.recv(65536) == b""  # closed at once, not after the grace
            assert time.monotonic() - stopped < 2
            rest = list(lines)
        ended = time.monotonic()
    assert "data: [DONE]" in rest
    assert proxy.process.wait(10) == 0
    assert time.monotonic() - ended < 5  # not shutdown_grace (60 s)


def test_the_pure_python_parser_is_refused(tmp_path, fake_tgi):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(proxy_config({"t": {"url": fake_tgi.url, "mapping": {"/info": None}}})))
    result = run_cli("--config", str(config), env={"MOOLTIPROXY_KEY": KEY, "AIOHTTP_NO_EXTENSIONS": "1"})
    assert result.returncode == 1
    assert "C HTTP parser" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_pure_python_parser_may_be_allowed_for_development(start_proxy, fake_tgi):
    env = {"AIOHTTP_NO_EXTENSIONS": "1", "MOOLTIPROXY_ALLOW_PURE_PYTHON_PARSER": "1"}
    proxy = start_proxy(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}}), env)
    assert httpx.get(f"{proxy.url}/info", headers=auth()).status_code == 200
    assert "for development only" in proxy.log()


def test_answers_name_no_server_software(start_proxy, fake_tgi):
    proxy = start_proxy(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}}))
    assert httpx.get(f"{proxy.url}/_proxy/health").headers["Server"] == "mooltiproxy"


def test_request_bytes_held_at_once_are_bounded(start_proxy, echo):
    config = proxy_config(
        {"echo": {"url": echo.url, "mapping": {"/post": None}}},
        system={"max_body_size": 600_000, "max_inflight_bytes": 1_000_000},
    )
    proxy = start_proxy(config)
    head = f"POST /post HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 600000\r\n\r\n"
    slow = connect(proxy)
    slow.sendall(head.encode() + b"a" * 1000)  # its 600,000 bytes are counted from the head on
    time.sleep(0.2)
    refused = httpx.post(f"{proxy.url}/post", content=b"b" * 500_000, headers=auth())
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"
    assert httpx.post(f"{proxy.url}/post", content=b"c" * 300_000, headers=auth()).status_code == 200
    slow.sendall(b"a" * 599_000)
    assert slow.recv(12).startswith(b"HTTP/1.1 200")
    slow.close()
    # Every byte is given back when its request ends.
    assert httpx.post(f"{proxy.url}/post", content=b"d" * 600_000, headers=auth()).status_code == 200


def test_the_budget_must_fit_one_body(tmp_path):
    config = proxy_config(
        {"t": {"url": "http://127.0.0.1:9", "mapping": {"/x": None}}}, system={"max_inflight_bytes": 5}
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("--config", str(tmp_path / "config.yaml"), "--check")
    assert result.returncode == 1
    assert "system.max_inflight_bytes: must be at least max_body_size" in result.stderr
