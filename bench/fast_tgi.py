"""A fast stand-in for TGI, for the benchmark: canned answers, no artificial delay.

It answers like TGI does: /generate with JSON (details when
asked, the x-prompt-tokens / x-generated-tokens headers), /generate_stream with `data:{json}`
events over chunked transfer, the last one with details, as many tokens as `max_new_tokens` asks
(16, 64 or 256; 64 otherwise); /health. Usage: fast_tgi.py PORT [aiohttp|raw]
"""

from __future__ import annotations

import asyncio
import json
import re
import sys

STREAM_LENGTHS = (16, 64, 256)
TOKEN_TEXTS = [f" w{index}" for index in range(max(STREAM_LENGTHS))]
GENERATED = "".join(TOKEN_TEXTS[:16])
_MAX_NEW_TOKENS = re.compile(rb'"max_new_tokens":\s*(\d+)')


def _response(status: bytes, content_type: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


def _generate(details: bool) -> bytes:
    payload: dict = {"generated_text": GENERATED}
    if details:  # TGI then lists every generated token, as the proxy's translated requests ask
        payload["details"] = {
            "finish_reason": "length",
            "generated_tokens": 16,
            "seed": None,
            "prefill": [],
            "tokens": [
                {"id": index, "text": text, "logprob": -0.1, "special": False}
                for index, text in enumerate(TOKEN_TEXTS[:16], start=1)
            ],
        }
    headers = b"x-prompt-tokens: 12\r\nx-generated-tokens: 16\r\nx-compute-type: gpu+optimized\r\n"
    return _response(b"200 OK", b"application/json", json.dumps(payload).encode(), headers)


def _stream(tokens: int) -> bytes:
    chunks = []
    for index, text in enumerate(TOKEN_TEXTS[:tokens], start=1):
        last = index == tokens
        event = {
            "index": index,
            "token": {"id": index, "text": text, "logprob": -0.1, "special": False},
            "top_tokens": [],
            "generated_text": "".join(TOKEN_TEXTS[:tokens]) if last else None,
            "details": {"finish_reason": "length", "generated_tokens": tokens, "input_length": 12, "seed": None}
            if last
            else None,
        }
        data = b"data:" + json.dumps(event).encode() + b"\n\n"
        chunks.append(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"".join(chunks) + b"0\r\n\r\n"


ANSWERS = {
    (b"POST", b"/generate", False): _generate(False),
    (b"POST", b"/generate", True): _generate(True),
    (b"GET", b"/health", False): _response(b"200 OK", b"text/plain", b""),
}
STREAMS = {tokens: _stream(tokens) for tokens in STREAM_LENGTHS}
NOT_FOUND = _response(b"404 Not Found", b"text/plain", b"")


def answer(method: bytes, path: bytes, body: bytes) -> bytes:
    if path == b"/generate_stream" and method == b"POST":
        asked = _MAX_NEW_TOKENS.search(body)
        return STREAMS.get(int(asked.group(1)) if asked else 64, STREAMS[64])
    details = b'"details": true' in body or b'"details":true' in body
    return ANSWERS.get((method, path, details), NOT_FOUND)


class FastTGI(asyncio.Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length = 0
            lowered = head.lower()
            position = lowered.find(b"\r\ncontent-length:")
            if position >= 0:
                end = lowered.find(b"\r\n", position + 2)
                length = int(head[position + 17 : end if end >= 0 else None])
            total = head_end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[head_end + 4 : total]
            self.buffer = self.buffer[total:]
            method, path = head.split(b" ", 2)[:2]
            self.transport.write(answer(method, path.split(b"?", 1)[0], body))


async def serve_raw(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(FastTGI, "127.0.0.1", port, backlog=1024)
    await server.serve_forever()


async def serve_aiohttp(port: int) -> None:
    """The same answers from an aiohttp server: the speed class of a Python upstream."""
    from aiohttp import web

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        head, _, payload = answer(request.method.encode(), request.path.encode(), body).partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.decode().split(": ", 1) for line in lines[1:])
        if headers.pop("Transfer-Encoding", None):  # the stream: each event in its own write
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            for event in _unchunk(payload):
                await response.write(event)
            await response.write_eof()
            return response
        headers.pop("Content-Length", None)
        return web.Response(status=status, headers=headers, body=payload)

    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    await asyncio.Event().wait()


def _unchunk(payload: bytes) -> list[bytes]:
    events = []
    while payload:
        size, _, rest = payload.partition(b"\r\n")
        length = int(size, 16)
        if not length:
            break
        events.append(rest[:length])
        payload = rest[length + 2 :]
    return events


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    port, kind = int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "aiohttp"
    print(f"stand-in TGI ({kind}) on http://127.0.0.1:{port}", flush=True)
    asyncio.run(serve_raw(port) if kind == "raw" else serve_aiohttp(port))
