"""What the proxy guarantees on the target side, at the byte level: framing, interim answers,
broken answers, kept-alive connections the target drops, and connections never reused after an
answer whose framing is in doubt. Targets' framing is read by aiohttp (leniently); their header
values are filtered."""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from conftest import KEY, auth, proxy_config
from support.scripted_upstream import Script, ScriptedUpstream


def connect_raw(proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(proxy.url.rsplit(":", 1)[1])), timeout=5)


TEXT = {"path": "/generate", "in": "textReqOpenAItoTGI", "out": "textAnsTGItoOpenAI"}


@pytest.fixture
def scripted() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def proxy(start_proxy, scripted):
    paths = ("/chunked", "/interim", "/both", "/bad-chunk", "/bad-head", "/eof", "/plain", "/no-content")
    mapping = {path: None for path in paths}
    mapping["/v1/completions"] = TEXT
    return start_proxy(proxy_config({"raw": {"url": scripted.url, "mapping": mapping}}, system={"timeout": 2}))


def chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\nX-Trailer: t\r\n\r\n"


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_chunked_answer_split_byte_by_byte(proxy, scripted):
    body = b'{"text": "' + b"x" * 300 + b'"}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    scripted.scripts["/chunked"] = Script(byte_by_byte(answer + chunked(body, 7)))
    response = httpx.get(f"{proxy.url}/chunked", headers=auth())
    assert response.status_code == 200
    assert response.content == body
    assert "x-trailer" not in response.headers


def test_interim_answers_are_skipped(proxy, scripted):
    scripted.scripts["/interim"] = Script(
        [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nhello",
        ],
        pause=0.05,
    )
    response = httpx.post(f"{proxy.url}/interim", headers=auth(), content=b"{}")
    assert (response.status_code, response.content, response.headers["x-final"]) == (201, b"hello", "yes")


def test_length_and_chunked_together_is_refused_and_the_connection_dropped(proxy, scripted):
    scripted.scripts["/both"] = Script(
        [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"abcdef", 4)]
    )
    for _ in range(2):
        assert httpx.get(f"{proxy.url}/both", headers=auth()).status_code == 502
    assert scripted.connections == 2  # never reused after an ambiguous answer


@pytest.mark.parametrize("method,status", [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_a_bodiless_answer_announcing_a_body_never_leaves_its_connection_for_the_next(proxy, scripted, method, status):
    """A forged answer sent right after a HEAD / 204 / 304 that announced a length must never reach
    the next request: that connection is closed, not pooled."""
    forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
    head = b"HTTP/1.1 %d X\r\nContent-Length: 38\r\n\r\n" % status
    scripted.scripts["/no-content"] = Script([head, forged], pause=0.001)
    scripted.scripts["/plain"] = Script([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    with httpx.Client(headers=auth()) as client:
        for _ in range(5):
            assert client.request(method, f"{proxy.url}/no-content").status_code == status
            time.sleep(0.01)
            assert client.get(f"{proxy.url}/plain").content == b"ok"
    assert scripted.connections >= 6


def test_keep_alive_connection_is_reused(proxy, scripted):
    scripted.scripts["/plain"] = Script([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    for _ in range(5):
        assert httpx.get(f"{proxy.url}/plain", headers=auth()).content == b"ok"
    assert scripted.connections == 1


def test_a_kept_alive_connection_the_upstream_dropped_is_replaced(proxy, scripted):
    # The upstream closes idle connections after 0.2 s without saying so beforehand.
    scripted.scripts["/plain"] = Script([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], close_after_seconds=0.2)
    assert httpx.get(f"{proxy.url}/plain", headers=auth()).status_code == 200
    time.sleep(0.5)
    assert httpx.get(f"{proxy.url}/plain", headers=auth()).content == b"ok"
    assert scripted.connections == 2


@pytest.mark.parametrize(
    "pieces", [[b"okEXTRA"], [b"", b"okEXTRA"], [b"o", b"kEXTRA"]], ids=["with-head", "after", "split"]
)
def test_bytes_beyond_the_length_are_never_relayed(start_proxy, scripted, pieces):
    """With `keepalive: false`, for a target not trusted to frame its answers, the stray bytes
    cannot reach another request either: every request has a connection of its own."""
    config = {"raw": {"url": scripted.url, "keepalive": False, "mapping": {"/plain": None}}}
    proxy = start_proxy(proxy_config(config))
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    scripted.scripts["/plain"] = Script([head + pieces[0], *pieces[1:]], pause=0.05)
    for _ in range(3):
        answer = httpx.get(f"{proxy.url}/plain", headers=auth())
        assert answer.content == b"ok" or answer.status_code == 502
        assert b"EXTRA" not in answer.content
    assert scripted.connections == 3


def test_body_delimited_by_the_close(proxy, scripted):
    scripted.scripts["/eof"] = Script(
        [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", b"until ", b"the end"], pause=0.05, close_after=True
    )
    response = httpx.get(f"{proxy.url}/eof", headers=auth())
    assert (response.status_code, response.content) == (200, b"until the end")


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nX-Split: a\nInjected: yes\r\nContent-Length: 0\r\n\r\n",  # bare LF
        b"HTTP/1.1 200 OK\r\n Folded: yes\r\nContent-Length: 0\r\n\r\n",  # obsolete line folding
        b"HTTP/1.1 200 OK\0\r\nContent-Length: 0\r\n\r\n",  # NUL in the status line
        b"HTTP/1.1 200 OK\r\nX-Ctl: a\x01b\r\nX-Del: a\x7fb\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_lenient_target_heads_never_relay_a_control_character(proxy, scripted, head):
    """aiohttp reads targets' heads leniently (their framing is trusted); what reaches the client
    is either a 502 or an answer whose every header is clean."""
    scripted.scripts["/bad-head"] = Script([head], close_after=True)
    with connect_raw(proxy) as sock:
        sock.sendall(f"GET /bad-head HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    status_line, *lines = answer.partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert status_line.split()[1] in (b"200", b"502")
    assert all(0x20 <= byte < 0x7F or byte == 0x09 for line in [status_line, *lines] for byte in line)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n",  # bare CR in the status line
        b"HTTP/1.1 200 OK\r\nX-Nul: a\0b\r\nContent-Length: 0\r\n\r\n",  # NUL in a value
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",  # conflicting lengths
        b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
        b"HTTP/2 200\r\nContent-Length: 0\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
    ],
)
def test_invalid_answer_head_is_502(proxy, scripted, head):
    scripted.scripts["/bad-head"] = Script([head], close_after=True)
    response = httpx.get(f"{proxy.url}/bad-head", headers=auth())
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert "injected" not in response.headers


def test_invalid_chunk_after_the_head_cuts_the_client_connection(proxy, scripted):
    scripted.scripts["/bad-chunk"] = Script(
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", b"zz\r\nnope\r\n"], pause=0.05
    )
    # The status was sent already: the client must see a cut, never a complete-looking body.
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{proxy.url}/bad-chunk", headers=auth())


def test_translated_answer_chunked_and_gzipped_is_decoded(proxy, scripted):
    body = gzip.compress(json.dumps({"generated_text": " decoded"}).encode())
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    scripted.scripts["/generate"] = Script(byte_by_byte(head) + [chunked(body, 5)])
    response = httpx.post(
        f"{proxy.url}/v1/completions", headers=auth(), json={"model": "m", "prompt": "p", "max_tokens": 3}
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == " decoded"
    # The proxy asked for no encoding, since it reads the answer itself.
    assert b"accept-encoding: identity" in scripted.requests[-1].lower()


def test_a_length_of_4400_digits_from_a_target_is_relayed_as_its_value(start_proxy, scripted):
    scripted.scripts["/long"] = Script([b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0" * 4400 + b"5\r\n\r\nhello"])
    proxy = start_proxy(proxy_config({"raw": {"url": scripted.url, "mapping": {"/long": None}}}))
    answer = httpx.get(f"{proxy.url}/long", headers=auth())
    assert (answer.status_code, answer.content, answer.headers["content-length"]) == (200, b"hello", "5")
    assert "Traceback" not in proxy.log() and "internal error" not in proxy.log()


FINAL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"


@pytest.mark.parametrize(
    "script",
    [
        Script([b"HTTP/1.1 100 Continue\r\n\r\n" + FINAL]),  # the interim and the final answer at once
        Script([b"HTTP/1.1 100 Continue\r\n\r\n", FINAL], pause=0.5),  # the final answer later
        # An interim answer carrying a body: no body belongs to a 1xx, so the rest cannot be trusted.
        Script([b"HTTP/1.1 100 Continue\r\nContent-Length: 44\r\n\r\n" + FINAL.replace(b"first", b"POISON") + FINAL]),
    ],
)
def test_interim_answers_never_reach_a_later_request(start_proxy, scripted, script):
    scripted.scripts["/first"] = script
    scripted.scripts["/second"] = Script([b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"])
    mapping = {"/first": None, "/second": None}
    proxy = start_proxy(proxy_config({"raw": {"url": scripted.url, "mapping": mapping}}, system={"timeout": 2}))
    httpx.post(f"{proxy.url}/first", headers=auth(), content=b"{}")
    for _ in range(3):  # on other client connections, on whatever target connection the pool gives
        assert httpx.get(f"{proxy.url}/second", headers=auth()).content == b"second"


@pytest.mark.parametrize("field", [b"Content-Length : 5", b"X Bad: 1", b"X-A\tB: 1", b"X-\x7f: 1"])
def test_a_header_name_that_is_no_token_is_a_502_and_never_relayed(start_proxy, scripted, field):
    scripted.scripts["/head"] = Script([b"HTTP/1.1 200 OK\r\n" + field + b"\r\nContent-Length: 5\r\n\r\nhello"])
    proxy = start_proxy(proxy_config({"raw": {"url": scripted.url, "mapping": {"/head": None}}}))
    with connect_raw(proxy) as sock:
        sock.sendall(f"GET /head HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 502 ")
    assert field.split(b":")[0] not in answer
