"""A generic upstream for what a TGI never does: redirects, slow or compressed answers, echoes."""

from __future__ import annotations

import asyncio
import gzip
import json

from aiohttp import web

from support.threaded_server import ThreadedServer


class EchoUpstream(ThreadedServer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: dict[str, int] = {}
        # /slow requests by their `tag` query parameter: in flight now, and at most.
        self.in_flight: dict[str, int] = {}
        self.most_in_flight: dict[str, int] = {}

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/redirect/{status}", self.redirect)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/drip", self.drip)
        app.router.add_get("/gzip", self.gzipped)
        app.router.add_get("/big", self.big)
        app.router.add_route("*", "/status/{status}", self.status)
        app.router.add_route("*", "/flaky/{key}", self.flaky)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app

    async def echo(self, request: web.Request) -> web.Response:
        record = self.received[-1]
        payload = {
            "method": record.method,
            "path": record.path,
            "query": record.query,
            "headers": record.headers,
            "body": record.body.decode("utf-8", "replace"),
        }
        return web.json_response(payload, headers={"X-Upstream": "echo", "Set-Cookie": "session=upstream"})

    async def redirect(self, request: web.Request) -> web.Response:
        location = request.query.get("to", "/echo/after-redirect")
        return web.Response(status=int(request.match_info["status"]), headers={"Location": location})

    async def slow(self, request: web.Request) -> web.Response:
        tag = request.query.get("tag", "")
        self.in_flight[tag] = self.in_flight.get(tag, 0) + 1
        self.most_in_flight[tag] = max(self.most_in_flight.get(tag, 0), self.in_flight[tag])
        try:
            await asyncio.sleep(float(request.query.get("seconds", "5")))
        finally:
            self.in_flight[tag] -= 1
        return web.json_response({"slow": True})

    async def drip(self, request: web.Request) -> web.StreamResponse:
        """`chunks` chunks, `gap` seconds apart: long in total, never silent for long."""
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for index in range(int(request.query.get("chunks", "5"))):
            await asyncio.sleep(float(request.query.get("gap", "0.3")))
            await response.write(f"chunk {index}\n".encode())
        return response

    async def big(self, request: web.Request) -> web.StreamResponse:
        """`mb` MiB of bytes, sent in 64 KiB chunks as fast as the reader takes them."""
        chunk = b"x" * 65536
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = int(request.query.get("mb", "100")) * 1024 * 1024
        await response.prepare(request)
        for _ in range(response.content_length // len(chunk)):
            await response.write(chunk)
        return response

    async def gzipped(self, request: web.Request) -> web.Response:
        body = gzip.compress(json.dumps({"compressed": True, "text": "x" * 2000}).encode())
        return web.Response(body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})

    async def flaky(self, request: web.Request) -> web.Response:
        """503 for the first `failures` calls with this key, then 200."""
        key = request.match_info["key"]
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] <= int(request.query.get("failures", "1")):
            return web.json_response({"error": "busy"}, status=503)
        return web.json_response({"calls": self.calls[key]})

    async def status(self, request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        return web.json_response({"upstream_status": status}, status=status)
