"""A plain aiohttp relay, the baseline peer: `bench/run.py --proxy-url` can measure it.

    plain_relay.py PORT UPSTREAM_URL

Forwards method, path, body and content type to the upstream with one pooled ClientSession and
returns status, content type and body: no auth, no translation, no streaming.
"""

import sys

import aiohttp
from aiohttp import web


async def make_app(upstream: str) -> web.Application:
    app = web.Application()

    async def start(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024))

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def relay(request: web.Request) -> web.Response:
        async with app["session"].request(
            request.method,
            upstream + request.path_qs,
            data=await request.read(),
            headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
        ) as answer:
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                headers={"Content-Type": answer.headers.get("Content-Type", "")},
            )

    app.router.add_route("*", "/{tail:.*}", relay)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


if __name__ == "__main__":
    web.run_app(make_app(sys.argv[2].rstrip("/")), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
