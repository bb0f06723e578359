"""Pooled connections to the targets and the forwarding of one request, redirects included."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .balancer import Balancer
from .errors import ProxyError
from .settings import SystemSettings, Target

log = logging.getLogger("mooltiproxy.upstream")

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class UpstreamPool:
    """One pooled ClientSession (and URL balancer) per target, opened at start-up, closed at
    shutdown; a reload keeps those of the targets whose connection settings did not change."""

    def __init__(self, targets: Mapping[str, Target], system: SystemSettings):
        self._targets = targets
        self._system = system
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._balancers: dict[str, Balancer] = {}
        self._shapes: dict[str, tuple] = {}

    async def open(self) -> None:
        for name, target in self._targets.items():
            self._sessions[name] = self._new_session(target)
            self._shapes[name] = self._shape(target)
            self._balancers[name] = Balancer(target.urls)

    def replace(self, targets: Mapping[str, Target], system: SystemSettings) -> UpstreamPool:
        """A pool for a reloaded config; the sessions it no longer uses are left to `retire`."""
        pool = UpstreamPool(targets, system)
        for name, target in targets.items():
            kept = name in self._sessions and self._shapes[name] == pool._shape(target)
            pool._sessions[name] = self._sessions[name] if kept else pool._new_session(target)
            pool._shapes[name] = pool._shape(target)
            same_urls = name in self._balancers and self._balancers[name].urls == target.urls
            pool._balancers[name] = self._balancers[name] if same_urls else Balancer(target.urls)
        return pool

    def sessions_not_in(self, other: UpstreamPool) -> list[aiohttp.ClientSession]:
        kept = set(map(id, other._sessions.values()))
        return [session for session in self._sessions.values() if id(session) not in kept]

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def session(self, target_name: str) -> aiohttp.ClientSession:
        return self._sessions[target_name]

    def balancer(self, target_name: str) -> Balancer:
        return self._balancers[target_name]

    def _shape(self, target: Target) -> tuple:
        """What a session is built from: when it changes, a reload makes a new one."""
        system = self._system
        return (target.max_connections, target.verify, system.connect_timeout, system.timeout)

    def _new_session(self, target: Target) -> aiohttp.ClientSession:
        # `timeout` bounds the silence between two reads, never the whole answer, so a long
        # generation or stream is not cut while it keeps producing.
        timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=self._system.connect_timeout, sock_read=self._system.timeout
        )
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=target.max_connections, limit_per_host=0, ssl=_tls_verification(target)
            ),
            timeout=timeout,
            # Sessions are shared by all clients: never keep an upstream's cookies.
            cookie_jar=aiohttp.DummyCookieJar(),
        )


def _tls_verification(target: Target) -> bool | ssl.SSLContext:
    if isinstance(target.verify, bool):
        return target.verify
    return ssl.create_default_context(cafile=target.verify)


@contextmanager
def upstream_failures(target: Target) -> Iterator[None]:
    """Turns network failures while talking to the target into 502 / 504 ProxyErrors naming it."""
    try:
        yield
    except TimeoutError:
        raise ProxyError(504, f"Target '{target.name}' did not answer in time", code="upstream_timeout") from None
    except aiohttp.TooManyRedirects:
        raise ProxyError(
            502, f"Target '{target.name}' redirected more than {MAX_REDIRECTS} times", code="upstream_error"
        ) from None
    except aiohttp.ClientConnectorError as exc:
        log.warning("cannot connect to target %s: %s", target.name, exc.os_error)
        raise ProxyError(502, f"Cannot connect to target '{target.name}'", code="upstream_unreachable") from None
    except (aiohttp.ClientError, OSError) as exc:
        log.warning("target %s failed: %s", target.name, type(exc).__name__)
        raise ProxyError(502, f"Target '{target.name}' failed to answer", code="upstream_error") from None


async def send(
    session: aiohttp.ClientSession,
    target: Target,
    method: str,
    url: str,
    headers: CIMultiDict,
    body: bytes | None,
    *,
    decompress: bool,
) -> aiohttp.ClientResponse:
    with upstream_failures(target):
        if target.preserve_method:
            return await _send_following_redirects(session, method, URL(url, encoded=True), headers, body, decompress)
        return await session.request(
            method,
            URL(url, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            auto_decompress=decompress,
        )


async def _send_following_redirects(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: CIMultiDict,
    body: bytes | None,
    decompress: bool,
) -> aiohttp.ClientResponse:
    """Follows redirects itself, re-sending the original method and body (preserveMethod)."""
    for _ in range(MAX_REDIRECTS + 1):
        response = await session.request(
            method, url, headers=headers, data=body, allow_redirects=False, auto_decompress=decompress
        )
        location = response.headers.get("Location")
        if response.status not in REDIRECT_STATUSES or not location:
            return response
        response.release()
        next_url = url.join(URL(location))
        if next_url.scheme not in ("http", "https"):
            raise aiohttp.ClientError("redirect to a non-HTTP location")
        if not _keeps_credentials(url, next_url):
            headers = headers.copy()
            headers.popall("Authorization", None)
        url = next_url
    raise aiohttp.TooManyRedirects(response.request_info, response.history)


def _keeps_credentials(current: URL, following: URL) -> bool:
    """The target's key follows a redirect on the same host (an http -> https upgrade included)."""
    if current.host != following.host:
        return False
    same_origin = current.scheme == following.scheme and current.port == following.port
    return same_origin or (current.scheme == "http" and following.scheme == "https")
