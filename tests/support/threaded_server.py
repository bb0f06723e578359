"""Runs an aiohttp application on a loopback port in a thread of its own, recording requests."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ThreadedServer:
    def __init__(self, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.received: list[Received] = []
        self.port = port
        self._ssl_context = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def build_app(self) -> web.Application:
        raise NotImplementedError

    def forget(self) -> None:
        """Forgets the requests received so far (the proxy's start-up questions, say)."""
        self.received.clear()

    def start(self) -> ThreadedServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        app = self.build_app()
        app.middlewares.insert(0, self._record)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://127.0.0.1:{self.port}"

    @property
    def last(self) -> Received:
        return self.received[-1]

    @web.middleware
    async def _record(self, request: web.Request, handler) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(request.method, request.path, request.raw_path.partition("?")[2], dict(request.headers), body)
        )
        return await handler(request)
