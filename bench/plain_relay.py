"""The engine's ceiling: a bare relay on aiohttp's low-level server and one tuned ClientSession, a
bearer check, streams relayed chunk by chunk, nothing else. `bench/run.py` starts it beside the
proxy and reports the proxy as a ratio of it.

    plain_relay.py PORT UPSTREAM_URL KEY
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
from aiohttp import web

try:
    import uvloop
except ImportError:
    uvloop = None


async def serve(port: int, upstream: str, key: str) -> None:
    expected = f"Bearer {key}"
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1024),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=300),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Content-Type", "Accept", "Accept-Encoding"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )

    async def relay(request: web.BaseRequest) -> web.StreamResponse:
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with session.request(request.method, upstream + request.raw_path, data=body, headers=headers) as answer:
            kind = {"Content-Type": answer.headers.get("Content-Type", "")}
            if answer.content_length is not None:
                return web.Response(status=answer.status, body=await answer.read(), headers=kind)
            response = web.StreamResponse(status=answer.status, headers=kind)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    server = web.Server(relay, access_log=None, handler_cancellation=True)
    await asyncio.get_running_loop().create_server(server, "127.0.0.1", port, backlog=1024)
    await asyncio.Event().wait()


if __name__ == "__main__":
    main = serve(int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3])
    uvloop.run(main) if uvloop else asyncio.run(main)
