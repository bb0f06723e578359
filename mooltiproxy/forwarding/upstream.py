"""Calling targets with aiohttp's client: one ClientSession (and its pool) per target, at most
`max_connections` requests in flight each, redirects followed by the proxy's own rules, and a
connection never reused after an answer whose framing is in doubt."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from mooltiproxy.config.settings import SystemSettings, Target
from mooltiproxy.core.content_length import content_length
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.forwarding.balancer import Balancer

log = logging.getLogger("mooltiproxy.upstream")

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# An idle connection older than this is closed rather than reused: servers drop theirs after a
# while (aiohttp after 15 s, uvicorn after 5 s), and a request sent on one they are dropping fails.
IDLE_SECONDS = 4.0
# What aiohttp would add on its own; the proxy forwards the client's (or sets its own) instead.
_SKIPPED_AUTO_HEADERS = ("User-Agent", "Content-Type", "Accept", "Accept-Encoding")
_QUEUE_RETRY_AFTER = "1"
_IDLE_POLL_SECONDS = 0.5
_WATCH_SECONDS = 1.0


class Slots:
    """At most `limit` holders at once, the others served in turn: asyncio.Semaphore without the
    coroutine and the scan of its waiters on every acquisition."""

    def __init__(self, limit: int):
        self._limit = self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

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

    @property
    def all_free(self) -> bool:
        return self._free == self._limit

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # the slot goes straight to the next in line
                waiter.set_result(None)
                return
        self._free += 1


# Header field names are tokens (RFC 9110 5.1, 5.6.2); joined by ":" to be checked in one match.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FIELD_NAMES = re.compile(rb"(?:%s(?::%s)*)?" % (_TOKEN, _TOKEN))


class InvalidAnswerHead(aiohttp.ClientError):
    """A target's answer whose head aiohttp took but no strict parser would."""


class _FramingGuardedResponse(aiohttp.ClientResponse):
    """A HEAD, 204 or 304 answer has no body whatever its head says; one that announces a body
    anyway comes from a target whose framing cannot be trusted. aiohttp gives such an answer's
    connection back to its pool as soon as the head is read, so it is closed here, at once: bytes
    the target sends after it (a forged answer) can never be read as the next request's answer."""

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        await super().start(connection)
        if protocol is not None and (
            (self.method == "HEAD" or self.status in (204, 304))
            and ("Content-Length" in self.headers or "Transfer-Encoding" in self.headers)
        ):
            protocol.close()
        return self


class UpstreamAnswer:
    """A target's answer whose body is still to be read; `release` ends it exactly once. Its
    connection goes back to the pool only when the body was read to its end; otherwise it is
    closed, so that no stray byte can be taken for the next answer."""

    __slots__ = ("response", "status", "headers", "content_length", "_slots", "_released", "_watchdog")

    def __init__(self, response: aiohttp.ClientResponse, slots: Slots):
        self.response = response
        self.status = response.status
        self.headers: CIMultiDictProxy[str] = response.headers
        self.content_length = content_length(response.headers)  # read once, as llhttp read it
        self._slots = slots
        self._released = False
        self._watchdog: asyncio.TimerHandle | None = None
        if self.content_length is None and not response.content.is_eof():
            self._watchdog = asyncio.get_running_loop().call_later(_WATCH_SECONDS, self._watch)

    def _watch(self) -> None:
        """aiohttp (3.14) leaves a reader waiting forever when a chunked body breaks mid-way: its
        parser closes the connection but never fails the body's stream. Checked every second for a
        body without a length: a connection closed before the body's end fails the stream."""
        content, connection = self.response.content, self.response.connection
        if content.is_eof() or content.exception() is not None:
            self._watchdog = None
        elif connection is None or connection.closed:
            content.set_exception(aiohttp.ClientPayloadError("the target broke the body's framing"))
            self._watchdog = None
        else:
            self._watchdog = asyncio.get_running_loop().call_later(_WATCH_SECONDS, self._watch)

    async def read(self) -> bytes:
        return await self.response.read()

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, one piece per read from the target."""
        return self.response.content.iter_any()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        response = self.response
        if response.content.is_eof() and not response.content.exception():
            response.release()
        else:
            response.close()
        self._slots.release()


def tls_context(verify: object) -> ssl.SSLContext:
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(verify))


class TargetClient:
    """One target's session: its pooled connections, and its limit of requests in flight."""

    def __init__(self, target: Target, system: SystemSettings):
        self.name = target.name
        self._slots = Slots(target.max_connections)
        self._queue_timeout = system.queue_timeout
        # keepalive: false, for a target not trusted to frame its answers: a connection per request.
        reuse = {"keepalive_timeout": IDLE_SECONDS} if target.keepalive else {"force_close": True}
        connector = aiohttp.TCPConnector(
            limit=target.max_connections, limit_per_host=0, ssl=tls_context(target.verify), **reuse
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            # `timeout` is the silence allowed between two reads, never a total: a long generation
            # or stream is not cut while it keeps producing.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=system.connect_timeout, sock_read=system.timeout),
            auto_decompress=False,
            skip_auto_headers=_SKIPPED_AUTO_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
            response_class=_FramingGuardedResponse,
            read_bufsize=2**16,
        )

    async def request(
        self, method: str, url: str, headers: CIMultiDict[str], body: bytes | None, *, decompress: bool = False
    ) -> UpstreamAnswer:
        """The answer once its head has arrived; the caller releases it."""
        if not self._slots.take():
            await self._wait_for_a_slot()
        try:
            response = await self.session.request(
                method,
                URL(url, encoded=True),  # as the client wrote it: yarl would re-quote the path and query
                headers=headers,
                data=body,
                allow_redirects=False,
                auto_decompress=decompress,
            )
        except BaseException:
            self._slots.release()
            raise
        names = [name for name, _ in response.raw_headers]
        if not _FIELD_NAMES.fullmatch(b":".join(names)):
            # llhttp lets `Content-Length : 5` through as a field named "Content-Length ": another
            # parser could read it as the length. The answer's framing is in doubt: never relayed.
            response.close()
            self._slots.release()
            # Named, never valued: a value may hold a secret of the target's (a cookie, say).
            invalid = [name for name in names if not _FIELD_NAMES.fullmatch(name)]
            raise InvalidAnswerHead(f"header names that are not tokens: {invalid!r:.200}")
        return UpstreamAnswer(response, self._slots)

    async def _wait_for_a_slot(self) -> None:
        try:
            async with asyncio.timeout(self._queue_timeout):
                await self._slots.wait_for_one()
        except TimeoutError:
            raise ProxyError(
                503,
                f"Target '{self.name}' is busy: no free connection within {self._queue_timeout:g} s",
                code="upstream_busy",
                headers={"Retry-After": _QUEUE_RETRY_AFTER},
            ) from None

    async def close(self) -> None:
        await self.session.close()

    async def close_when_idle(self) -> None:
        """Closes once no answer is in flight: a reload never cuts a stream."""
        while not self._slots.all_free:
            await asyncio.sleep(_IDLE_POLL_SECONDS)
        await self.close()


class UpstreamPool:
    """The session of every target (and its URL balancer), opened at start-up, closed at shutdown;
    a reload keeps those of the targets whose connection settings did not change."""

    def __init__(self, targets: Mapping[str, Target], system: SystemSettings):
        self._targets = targets
        self._system = system
        self._clients: dict[str, TargetClient] = {}
        self._balancers: dict[str, Balancer] = {}
        self._shapes: dict[str, tuple] = {}

    async def open(self) -> None:
        for name, target in self._targets.items():
            self._clients[name] = TargetClient(target, self._system)
            self._shapes[name] = self._shape(target)
            self._balancers[name] = Balancer(target.urls)

    def replace(self, targets: Mapping[str, Target], system: SystemSettings) -> UpstreamPool:
        """A pool for a reloaded config; the sessions it no longer uses are left to `retire`."""
        pool = UpstreamPool(targets, system)
        for name, target in targets.items():
            shape = pool._shape(target)
            kept = name in self._clients and self._shapes[name] == shape
            pool._clients[name] = self._clients[name] if kept else TargetClient(target, system)
            pool._shapes[name] = shape
            same_urls = name in self._balancers and self._balancers[name].urls == target.urls
            pool._balancers[name] = self._balancers[name] if same_urls else Balancer(target.urls)
        return pool

    async def retire(self, successor: UpstreamPool) -> None:
        """Closes the sessions the successor does not use, once their answers in flight are done."""
        kept = set(map(id, successor._clients.values()))
        await asyncio.gather(*(client.close_when_idle() for client in self._clients.values() if id(client) not in kept))

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    def client(self, target_name: str) -> TargetClient:
        return self._clients[target_name]

    def balancer(self, target_name: str) -> Balancer:
        return self._balancers[target_name]

    def _shape(self, target: Target) -> tuple:
        """What the sessions are made with: when it changes, a reload makes new ones."""
        system = self._system
        return (
            target.max_connections,
            target.verify,
            target.keepalive,
            system.connect_timeout,
            system.timeout,
            system.queue_timeout,
        )


def upstream_failure(target: Target, error: BaseException) -> ProxyError:
    """A network failure while talking to the target (a timeout, a refused connection, an invalid
    answer...), as the 502 / 504 ProxyError that names it; nothing of the target's URL or key."""
    name = target.name
    if isinstance(error, aiohttp.ClientSSLError):
        log.warning("TLS handshake with target %s failed: %s", name, error)
        return ProxyError(
            502, f"The TLS handshake with target '{name}' failed (is it an https server?)", code="upstream_tls"
        )
    if isinstance(error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        # The log names what was tried and why it failed; the client's message names the target only.
        if isinstance(error, aiohttp.ClientConnectorError):
            code = error.os_error.errno
            where, why = f"{error.host}:{error.port}", os.strerror(code) if code else str(error.os_error)
        else:
            where, why = "its address", "no connection within connect_timeout"
        log.warning("cannot connect to target %s at %s: %s", name, where, why)
        return ProxyError(502, f"Cannot connect to target '{name}'", code="upstream_unreachable")
    if isinstance(error, TimeoutError):
        return ProxyError(504, f"Target '{name}' did not answer in time", code="upstream_timeout")
    if isinstance(error, aiohttp.TooManyRedirects):
        return ProxyError(502, f"Target '{name}' redirected more than {MAX_REDIRECTS} times", code="upstream_error")
    # Closed connections, invalid answers, broken bodies.
    log.warning("target %s failed: %s: %s", name, type(error).__name__, error)
    return ProxyError(502, f"Target '{name}' failed to answer", code="upstream_error")


# What upstream_failure turns into a ProxyError; anything else is a bug of the proxy's.
UPSTREAM_ERRORS = (aiohttp.ClientError, OSError)


async def send(
    client: TargetClient,
    target: Target,
    method: str,
    url: str,
    headers: CIMultiDict[str],
    body: bytes | None,
    *,
    decompress: bool = False,
) -> UpstreamAnswer:
    """The answer, redirects followed: like browsers (a POST redirected by 301 / 302 / 303 becomes a
    GET without body), or re-sending the method and body when the target has preserveMethod."""
    try:
        for _ in range(MAX_REDIRECTS + 1):
            answer = await client.request(method, url, headers, body, decompress=decompress)
            location = answer.headers.get("Location")
            if answer.status not in REDIRECT_STATUSES or not location:
                return answer
            answer.release()
            next_url = urljoin(url, location)
            if urlsplit(next_url).scheme not in ("http", "https"):
                raise aiohttp.ClientResponseError(
                    answer.response.request_info, (), status=answer.status, message="redirect to a non-HTTP location"
                )
            if not target.preserve_method and (
                (answer.status == 303 and method != "HEAD") or (answer.status in (301, 302) and method == "POST")
            ):
                method, body = "GET", None
                headers = headers.copy()
                headers.popall("Content-Type", None)
            if not _keeps_credentials(url, next_url):
                headers = headers.copy()
                headers.popall("Authorization", None)
            url = next_url
        raise aiohttp.TooManyRedirects(answer.response.request_info, ())
    except UPSTREAM_ERRORS as error:
        raise upstream_failure(target, error) from None


def _keeps_credentials(current: str, following: str) -> bool:
    """The target's key follows a redirect on the same host (an http -> https upgrade included)."""
    here, there = urlsplit(current), urlsplit(following)
    if here.hostname != there.hostname:
        return False
    same_origin = here.scheme == there.scheme and here.port == there.port
    return same_origin or (here.scheme == "http" and there.scheme == "https")
