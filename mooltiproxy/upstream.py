"""Pooled keep-alive connections to the targets, and the forwarding of one request, redirects
included."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from multidict import CIMultiDict

from .balancer import Balancer
from .connection import UpstreamConnection, UpstreamResponse
from .errors import ProxyError
from .http1 import encode_head, field_lines
from .settings import SystemSettings, Target

log = logging.getLogger("mooltiproxy.upstream")

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# An idle connection older than this is closed rather than reused: servers drop theirs after a
# while (aiohttp after 15 s, uvicorn after 5 s), and a request sent on one they are dropping fails.
IDLE_SECONDS = 4.0
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class CannotConnect(ConnectionError):
    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


class TooManyRedirects(ConnectionError):
    pass


class Slots:
    """At most `limit` holders at once, the others served in turn: asyncio.Semaphore without the
    coroutine and the scan of its waiters on every acquisition."""

    def __init__(self, limit: int):
        self._free = limit
        self._waiters: deque[asyncio.Future] = deque()

    def take(self) -> bool:
        """A slot, when one is free and nobody waits before us."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def wait_for_one(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot just as we were cancelled
                self.release()
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # the slot goes straight to the next in line
                waiter.set_result(None)
                return
        self._free += 1


# Compared and hashed by identity: one Origin per scheme://host:port (TargetConnections._split),
# and it keys the idle connections on every request.
@dataclass(frozen=True, slots=True, eq=False)
class Origin:
    host: str
    port: int
    host_header: str
    tls: ssl.SSLContext | None


class TargetConnections:
    """Keep-alive connections to one target's URLs (and where they redirect); at most
    `max_connections` requests in flight, the others wait their turn."""

    def __init__(self, target: Target, system: SystemSettings):
        self._tls = _tls_context(target.verify)
        self._connect_timeout = system.connect_timeout
        # `timeout` bounds the silence between two reads, never the whole answer, so a long
        # generation or stream is not cut while it keeps producing.
        self._read_timeout = system.timeout
        self._slots = Slots(target.max_connections)
        self._origins: dict[str, Origin] = {}
        self._idle: dict[Origin, list[UpstreamConnection]] = {}
        self._closing = False

    async def request(self, method: str, url: str, headers: CIMultiDict, body: bytes | None) -> UpstreamResponse:
        """The answer once its head has arrived; the caller releases it."""
        origin, path = self._split(url)
        head = _request_head(method, path, origin.host_header, headers, body)
        if not self._slots.take():
            await self._slots.wait_for_one()
        try:
            # A kept-alive connection the upstream closed meanwhile gets one more try on a new one.
            for reused in (True, False):
                connection = self._idle_connection(origin) if reused else None
                if connection is None:
                    connection, reused = await self._connect(origin), False
                connection.lend(self._released)
                try:
                    return await connection.request(head, body, no_body=method == "HEAD")
                except BaseException as exc:
                    stale = isinstance(exc, ConnectionError) and reused and connection.received_nothing
                    connection.discard()
                    if not stale:
                        raise
            raise AssertionError("unreachable")
        except BaseException:
            self._slots.release()
            raise

    def close(self) -> None:
        """Idle connections close now, those in use when their answer is released."""
        self._closing = True
        for connections in self._idle.values():
            for connection in connections:
                connection.discard()
        self._idle.clear()

    def _released(self, connection: UpstreamConnection, reusable: bool) -> None:
        self._slots.release()
        if reusable and not self._closing:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.origin, []).append(connection)
        elif not connection.closed:
            connection.discard()

    def _idle_connection(self, origin: Origin) -> UpstreamConnection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        too_old = time.monotonic() - IDLE_SECONDS
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be dropped
            if not connection.closed and connection.idle_since > too_old:
                return connection
            connection.discard()
        return None

    async def _connect(self, origin: Origin) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: UpstreamConnection(origin, self._read_timeout),
                    origin.host,
                    origin.port,
                    ssl=origin.tls,
                    server_hostname=origin.host if origin.tls else None,
                )
        except OSError as exc:
            raise CannotConnect(exc) from None
        return connection

    def _split(self, url: str) -> tuple[Origin, str]:
        """The origin (cached per scheme://host:port) and the request target of a URL."""
        slash = url.find("/", url.find("://") + 3)
        key, path = (url, "/") if slash < 0 else (url[:slash], url[slash:])
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = self._origin(key)
        return origin, path

    def _origin(self, key: str) -> Origin:
        parts = urlsplit(key)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
            raise CannotConnect(OSError(f"not an http(s) origin: {key!r}"))
        tls = self._tls if parts.scheme == "https" else None
        port = parts.port or (443 if tls else 80)
        return Origin(parts.hostname, port, parts.netloc.rpartition("@")[2], tls)


def _tls_context(verify: object) -> ssl.SSLContext:
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify)


def _request_head(method: str, path: str, host: str, headers: CIMultiDict, body: bytes | None) -> bytes:
    if body is not None:
        length = f"Content-Length: {len(body)}\r\n"
    else:
        length = "Content-Length: 0\r\n" if method in _BODY_METHODS else ""
    fields = field_lines(headers) + "\r\n" if headers else ""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{fields}{length}\r\n"
    # Every CR and LF is one of ours: nothing in a header or the path can split the request.
    lines = 3 + len(headers) + (1 if length else 0)
    if head.count("\r") != lines or head.count("\n") != lines:
        raise ValueError("CR or LF in the request line or a header")
    return encode_head(head)


class UpstreamPool:
    """The connections of every target (and its URL balancer), opened at start-up, closed at
    shutdown; a reload keeps those of the targets whose connection settings did not change."""

    def __init__(self, targets: Mapping[str, Target], system: SystemSettings):
        self._targets = targets
        self._system = system
        self._connections: dict[str, TargetConnections] = {}
        self._balancers: dict[str, Balancer] = {}
        self._shapes: dict[str, tuple] = {}

    async def open(self) -> None:
        for name, target in self._targets.items():
            self._connections[name] = TargetConnections(target, self._system)
            self._shapes[name] = self._shape(target)
            self._balancers[name] = Balancer(target.urls)

    def replace(self, targets: Mapping[str, Target], system: SystemSettings) -> UpstreamPool:
        """A pool for a reloaded config; the connections it no longer uses are left to `retire`."""
        pool = UpstreamPool(targets, system)
        for name, target in targets.items():
            kept = name in self._connections and self._shapes[name] == pool._shape(target)
            pool._connections[name] = self._connections[name] if kept else TargetConnections(target, system)
            pool._shapes[name] = pool._shape(target)
            same_urls = name in self._balancers and self._balancers[name].urls == target.urls
            pool._balancers[name] = self._balancers[name] if same_urls else Balancer(target.urls)
        return pool

    def retire(self, successor: UpstreamPool) -> None:
        """Closes the connections the successor does not use (in-flight answers finish first)."""
        kept = set(map(id, successor._connections.values()))
        for connections in self._connections.values():
            if id(connections) not in kept:
                connections.close()

    def close(self) -> None:
        for connections in self._connections.values():
            connections.close()
        self._connections.clear()

    def connections(self, target_name: str) -> TargetConnections:
        return self._connections[target_name]

    def balancer(self, target_name: str) -> Balancer:
        return self._balancers[target_name]

    def _shape(self, target: Target) -> tuple:
        """What the connections are made with: when it changes, a reload makes new ones."""
        system = self._system
        return (target.max_connections, target.verify, system.connect_timeout, system.timeout)


def upstream_failure(target: Target, error: OSError) -> ProxyError:
    """A network failure while talking to the target (a timeout, a refused connection, an invalid
    answer...), as the 502 / 504 ProxyError that names it. Callers catch OSError themselves:
    a try statement costs nothing until it catches, a context manager costs three calls."""
    name = target.name
    if isinstance(error, TimeoutError):
        return ProxyError(504, f"Target '{name}' did not answer in time", code="upstream_timeout")
    if isinstance(error, TooManyRedirects):
        return ProxyError(502, f"Target '{name}' redirected more than {MAX_REDIRECTS} times", code="upstream_error")
    if isinstance(error, CannotConnect):
        log.warning("cannot connect to target %s: %s", name, error.error)
        return ProxyError(502, f"Cannot connect to target '{name}'", code="upstream_unreachable")
    # ConnectionError included: closed connections, invalid answers
    log.warning("target %s failed: %s: %s", name, type(error).__name__, error)
    return ProxyError(502, f"Target '{name}' failed to answer", code="upstream_error")


async def send(
    connections: TargetConnections,
    target: Target,
    method: str,
    url: str,
    headers: CIMultiDict,
    body: bytes | None,
) -> UpstreamResponse:
    """The answer, redirects followed: like browsers (a POST redirected by 301 / 302 / 303 becomes a
    GET without body), or re-sending the method and body when the target has preserveMethod."""
    try:
        for _ in range(MAX_REDIRECTS + 1):
            response = await connections.request(method, url, headers, body)
            location = response.headers.get("Location")
            if response.status not in REDIRECT_STATUSES or not location:
                return response
            response.release()
            next_url = urljoin(url, location)
            if urlsplit(next_url).scheme not in ("http", "https"):
                raise ConnectionError("redirect to a non-HTTP location")
            if not target.preserve_method and (
                (response.status == 303 and method != "HEAD") or (response.status in (301, 302) and method == "POST")
            ):
                method, body = "GET", None
                headers = headers.copy()
                headers.popall("Content-Type", None)
            if not _keeps_credentials(url, next_url):
                headers = headers.copy()
                headers.popall("Authorization", None)
            url = next_url
        raise TooManyRedirects()
    except OSError as error:
        raise upstream_failure(target, error) from None


def _keeps_credentials(current: str, following: str) -> bool:
    """The target's key follows a redirect on the same host (an http -> https upgrade included)."""
    here, there = urlsplit(current), urlsplit(following)
    if here.hostname != there.hostname:
        return False
    same_origin = here.scheme == there.scheme and here.port == there.port
    return same_origin or (here.scheme == "http" and there.scheme == "https")
