"""The proxy's own HTTP/1.1 server, at the byte level: pipelining, chunked and compressed request
bodies, 100-continue, HTTP/1.0, HEAD, absolute-form targets, and the heads it must refuse."""

from __future__ import annotations

import gzip
import json
import socket
import time

import pytest

from conftest import KEY, proxy_config, wait_for_log
from support.scripted_upstream import Script, ScriptedUpstream

PATHS = ("/a", "/b", "/c", "/echo")


@pytest.fixture
def proxy(start_proxy, echo):
    config = proxy_config(
        {"echo": {"url": echo.url, "mapping": dict.fromkeys(PATHS)}}, system={"max_body_size": 10_000}
    )
    return start_proxy(config)


def connect(proxy) -> socket.socket:
    port = int(proxy.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def request(method: str, target: str, body: bytes = b"", *, headers: str = "", version: str = "1.1") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    head = f"{method} {target} HTTP/{version}\r\nHost: proxy\r\nAuthorization: Bearer {KEY}\r\n{length}{headers}\r\n"
    return head.encode() + body


class Reader:
    """Reads answers off a socket one by one (Content-Length or chunked bodies)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def _until(self, delimiter: bytes) -> bytes:
        while delimiter not in self.buffer:
            if not self._fill():
                raise ConnectionError("closed")
        part, _, self.buffer = self.buffer.partition(delimiter)
        return part

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError("closed")
        part, self.buffer = self.buffer[:size], self.buffer[size:]
        return part

    def answer(self, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        status_line, *lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        status = int(status_line.split()[1])
        if head_only or status in (100, 204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._until(b"\r\n").split(b";")[0], 16):
                body += self._exactly(size)
                self._until(b"\r\n")
            self._until(b"\r\n")
            return status, headers, body
        return status, headers, self._exactly(int(headers["content-length"]))

    def closed(self) -> bool:
        return not self.buffer and not self._fill()


def test_pipelined_requests_are_answered_in_order(proxy, echo):
    with connect(proxy) as sock:
        sock.sendall(request("GET", "/a?n=1") + request("POST", "/b", b'{"n": 2}') + request("GET", "/c"))
        reader = Reader(sock)
        answers = [reader.answer() for _ in range(3)]
    assert [status for status, _, _ in answers] == [200, 200, 200]
    echoed = [json.loads(body) for _, _, body in answers]
    assert [(e["method"], e["path"], e["query"]) for e in echoed] == [
        ("GET", "/a", "n=1"),
        ("POST", "/b", ""),
        ("GET", "/c", ""),
    ]
    assert echoed[1]["body"] == '{"n": 2}'


def test_chunked_request_body_arrives_whole(proxy, echo):
    body = b'{"text": "' + b"y" * 500 + b'"}'
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i : i + 9]), body[i : i + 9]) for i in range(0, len(body), 9))
    with connect(proxy) as sock:
        sock.sendall(request("POST", "/echo", headers="Transfer-Encoding: chunked\r\n"))
        for index in range(0, len(chunked), 50):  # in pieces that split sizes, data and CRLFs
            sock.sendall(chunked[index : index + 50])
        sock.sendall(b"0\r\nX-Trailer: dropped\r\n\r\n")
        status, _, answer = Reader(sock).answer()
    assert status == 200
    assert json.loads(answer)["body"] == body.decode()
    assert echo.last.headers["Content-Length"] == str(len(body))
    assert "Transfer-Encoding" not in echo.last.headers


def test_expect_100_continue(proxy, echo):
    body = b'{"continued": true}'
    with connect(proxy) as sock:
        head = request("POST", "/echo", headers=f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n")
        sock.sendall(head)
        reader = Reader(sock)
        assert reader.answer()[0] == 100
        sock.sendall(body)
        status, _, answer = reader.answer()
    assert status == 200
    assert json.loads(answer)["body"] == body.decode()
    assert "Expect" not in echo.last.headers


def test_http10_closes_unless_kept_alive(proxy):
    with connect(proxy) as sock:
        sock.sendall(request("GET", "/a", version="1.0"))
        reader = Reader(sock)
        assert reader.answer()[0] == 200
        assert reader.closed()
    with connect(proxy) as sock:
        sock.sendall(request("GET", "/a", headers="Connection: keep-alive\r\n", version="1.0"))
        reader = Reader(sock)
        assert reader.answer()[1]["connection"] == "keep-alive"
        sock.sendall(request("GET", "/b", version="1.0"))
        assert reader.answer()[0] == 200


def test_head_answer_has_no_body_and_the_connection_goes_on(proxy):
    with connect(proxy) as sock:
        sock.sendall(request("HEAD", "/a") + request("GET", "/b"))
        reader = Reader(sock)
        status, headers, _ = reader.answer(head_only=True)
        assert status == 200 and int(headers["content-length"]) > 0
        status, _, body = reader.answer()
    assert status == 200
    assert json.loads(body)["path"] == "/b"


def test_absolute_form_target(proxy, echo):
    with connect(proxy) as sock:
        sock.sendall(request("GET", "http://proxy/c?x=1"))
        status, _, body = Reader(sock).answer()
    assert status == 200
    assert (json.loads(body)["path"], json.loads(body)["query"]) == ("/c", "x=1")


def test_compressed_request_body_is_bounded_after_decoding(proxy, echo):
    before = len(echo.received)
    bomb = gzip.compress(b"0" * 5_000_000)  # 5 MB once decoded, a few KiB on the wire
    assert len(bomb) < 10_000
    with connect(proxy) as sock:
        sock.sendall(request("POST", "/echo", bomb, headers="Content-Encoding: gzip\r\n"))
        status, _, body = Reader(sock).answer()
    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"
    with connect(proxy) as sock:
        sock.sendall(request("POST", "/echo", b"not gzip", headers="Content-Encoding: gzip\r\n"))
        assert Reader(sock).answer()[0] == 400
        sock.sendall(request("POST", "/echo", b"x", headers="Content-Encoding: zstd\r\n"))
        assert Reader(sock).answer()[0] == 415
    assert len(echo.received) == before


# Heads llhttp refuses; each carries the key, which must reach no log (conftest checks).
MALFORMED = {
    "space before the colon": "GET /a HTTP/1.1\r\nHost: proxy\r\nX-Bad : 1\r\n",
    "folded header line": "GET /a HTTP/1.1\r\nHost: proxy\r\nX-A: 1\r\n  folded\r\n",
    "length and chunked": "POST /a HTTP/1.1\r\nHost: proxy\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n",
    "two lengths": "POST /a HTTP/1.1\r\nHost: proxy\r\nContent-Length: 3\r\nContent-Length: 4\r\n",
    "negative length": "POST /a HTTP/1.1\r\nHost: proxy\r\nContent-Length: -1\r\n",
    "huge length": "POST /a HTTP/1.1\r\nHost: proxy\r\nContent-Length: " + "9" * 4400 + "\r\n",
    "no Host": "GET /a HTTP/1.1\r\nX-A: 1\r\n",
    "two Hosts": "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n",
    "space in the target": "GET /a b HTTP/1.1\r\nHost: proxy\r\n",
    "TE with a no-break space": "POST /a HTTP/1.1\r\nHost: proxy\r\nTransfer-Encoding: \xa0chunked\r\n",
    "length with a no-break space": "POST /a HTTP/1.1\r\nHost: proxy\r\nContent-Length: \xa05, 5\r\n",
    **{
        f"control {name} in a value": f"GET /a HTTP/1.1\r\nHost: proxy\r\nX-A: a{char}b\r\n"
        for name, char in (("\\x01", "\x01"), ("\\x0b", "\x0b"), ("\\x1f", "\x1f"), ("\\x7f", "\x7f"))
    },
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_heads_get_400_a_closed_connection_and_one_quiet_log_line(proxy, echo, raw):
    before = len(echo.received)
    with connect(proxy) as sock:
        sock.sendall(f"{raw}Authorization: Bearer {KEY}\r\nX-Secret: do-not-log\r\n\r\n".encode("latin-1"))
        reader = Reader(sock)
        assert reader.answer()[0] == 400
        assert reader.closed()
    assert len(echo.received) == before
    log = wait_for_log(proxy, "refused a malformed request from 127.0.0.1")
    assert "do-not-log" not in log and "Traceback" not in log


@pytest.mark.parametrize("line", ["GET /a HTTP/2.0", "GET /a HTTP/0.9"])
def test_other_http_versions_are_refused(proxy, echo, line):
    before = len(echo.received)
    with connect(proxy) as sock:
        sock.sendall(f"{line}\r\nHost: proxy\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
        status = Reader(sock).answer()[0]
    assert status in (400, 505)
    assert len(echo.received) == before


def test_unsupported_transfer_coding_gets_501(proxy, echo):
    before = len(echo.received)
    with connect(proxy) as sock:
        sock.sendall(request("POST", "/a", headers="Transfer-Encoding: gzip, chunked\r\n") + b"0\r\n\r\n")
        assert Reader(sock).answer()[0] == 501
    assert len(echo.received) == before


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"3;ext=1\nabc\r\n0\r\n\r\n",  # a bare LF ending a chunk extension
        b" 3\r\nabc\r\n0\r\n\r\n",  # blanks before the chunk size
        b"3\r\nabc\r\n0\r\nGET /admin HTTP/1.1\r\n\r\n",  # a trailer "line" that is no field
    ],
    ids=["bad size", "bare LF in an extension", "blank before the size", "request in the trailers"],
)
def test_malformed_chunked_body_gets_400(proxy, echo, body):
    before = len(echo.received)
    with connect(proxy) as sock:
        sock.sendall(request("POST", "/echo", headers="Transfer-Encoding: chunked\r\n") + body)
        reader = Reader(sock)
        assert reader.answer()[0] == 400
    assert len(echo.received) == before


@pytest.mark.parametrize(
    "headers",
    ["X-Big: " + "p" * 9000 + "\r\n", "".join(f"X-Many-{i}: m\r\n" for i in range(200))],
    ids=["a field over 8190 bytes", "over 128 fields"],
)
def test_oversized_head_is_refused(proxy, echo, headers):
    before = len(echo.received)
    with connect(proxy) as sock:
        sock.sendall(request("GET", "/a", headers=headers))
        reader = Reader(sock)
        assert reader.answer()[0] in (400, 431)
        assert reader.closed()
    assert len(echo.received) == before


def test_a_slow_head_is_cut_after_client_timeout(start_proxy, echo):
    config = proxy_config({"echo": {"url": echo.url, "mapping": {"/a": None}}}, system={"client_timeout": 1})
    proxy = start_proxy(config)
    with connect(proxy) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: proxy\r\n")  # and never the rest
        sock.settimeout(5)
        assert sock.recv(1024) == b""  # closed by the proxy, without an answer


def test_header_values_cross_as_utf8_and_undecodable_ones_are_dropped(start_proxy):
    """UTF-8 header bytes cross unchanged both ways; bytes that are not UTF-8 could not be written
    back as they came, so their field is dropped rather than mangled."""
    scripted = ScriptedUpstream().start()
    try:
        scripted.scripts["/label"] = Script(
            [
                b"HTTP/1.1 200 OK\r\nX-Answer: na\xc3\xafve\r\nX-Latin: na\xefve\r\nX-Ctl: a\x01b\r\n"
                b"Content-Length: 2\r\n\r\nok"
            ]
        )
        proxy = start_proxy(proxy_config({"raw": {"url": scripted.url, "mapping": {"/label": None}}}))
        with connect(proxy) as sock:
            sock.sendall(
                request("GET", "/label", headers="X-Label: caf\xe9\r\nX-Latin: caf\xe9\r\n").replace(
                    b"X-Latin: caf\xc3\xa9", b"X-Latin: caf\xe9"
                )
            )
            status, _, _ = Reader(sock).answer()
            sock.sendall(request("GET", "/label"))
            head = Reader(sock)._until(b"\r\n\r\n")
    finally:
        scripted.stop()
    assert status == 200
    sent = next(head for head in scripted.requests if head.startswith(b"GET /label"))
    assert b"\r\nX-Label: caf\xc3\xa9\r\n" in sent + b"\r\n"
    assert b"X-Latin" not in sent
    assert b"\r\nX-Answer: na\xc3\xafve\r\n" in head + b"\r\n"
    assert b"X-Latin" not in head and b"X-Ctl" not in head


def test_one_date_header_the_upstream_one_when_it_sent_one(start_proxy):
    """Date is a single-valued field: the upstream's is relayed, and the proxy adds its own only to
    answers without one."""
    scripted = ScriptedUpstream().start()
    try:
        dated = b"HTTP/1.1 200 OK\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 2\r\n\r\nok"
        scripted.scripts["/dated"] = Script([dated])
        scripted.scripts["/undated"] = Script([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
        config = proxy_config({"raw": {"url": scripted.url, "mapping": {"/dated": None, "/undated": None}}})
        proxy = start_proxy(config)
        heads = []
        for path in ("/dated", "/undated"):
            with connect(proxy) as sock:
                sock.sendall(request("GET", path))
                heads.append(Reader(sock)._until(b"\r\n\r\n").decode("latin-1").lower())
    finally:
        scripted.stop()
    assert heads[0].count("\r\ndate: ") == 1
    assert "\r\ndate: mon, 02 jan 2006 15:04:05 gmt" in heads[0]
    assert heads[1].count("\r\ndate: ") == 1


def test_a_length_of_4400_digits_is_read_as_llhttp_reads_it(proxy, echo):
    """Leading zeros are valid, and Python's int() refuses strings past 4,300 digits."""
    with connect(proxy) as sock:
        sock.sendall(request("POST", "/echo", headers=f"Content-Length: {'0' * 4400}5\r\n") + b"hello")
        status, _, body = Reader(sock).answer()
    assert status == 200
    assert json.loads(body)["body"] == "hello"
    assert "Traceback" not in proxy.log() and "internal error" not in proxy.log()


def test_clients_that_pipeline_and_read_nothing_are_cut(start_proxy, echo):
    """Answers queue for a client that sends and never reads: after client_timeout without reading,
    whatever holds the answers, its connection is closed."""
    config = proxy_config({"echo": {"url": echo.url, "mapping": {"/a": None}}}, system={"client_timeout": 1})
    proxy = start_proxy(config)
    clients = [connect(proxy) for _ in range(10)]
    for sock in clients:
        sock.setblocking(False)
    pipelined = request("GET", "/a") * 200
    cut: set[int] = set()
    deadline = time.monotonic() + 6
    while len(cut) < len(clients) and time.monotonic() < deadline:
        for index, sock in enumerate(clients):
            if index in cut:
                continue
            try:
                sock.send(pipelined)
            except BlockingIOError:
                pass
            except OSError:  # reset or broken pipe: the proxy cut it
                cut.add(index)
        time.sleep(0.01)
    assert len(cut) == len(clients), f"{len(clients) - len(cut)} connections still open"
    assert "cut a connection whose client read nothing for 1 s" in proxy.log()
    for sock in clients:
        sock.close()
