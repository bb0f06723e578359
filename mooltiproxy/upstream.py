"""Pooled connections to the targets and the forwarding of one request, redirects included."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .errors import ProxyError
from .settings import SystemSettings, Target

log = logging.getLogger("mooltiproxy.upstream")

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class UpstreamPool:
    """One pooled ClientSession per target, opened at start-up and closed at shutdown."""

    def __init__(self, targets: Mapping[str, Target], system: SystemSettings):
        self._targets = targets
        # `timeout` bounds the silence between two reads, never the whole answer, so a long
        # generation or stream is not cut while it keeps producing.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=system.connect_timeout, sock_read=system.timeout
        )
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def open(self) -> None:
        for name, target in self._targets.items():
            self._sessions[name] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=target.max_connections, limit_per_host=0, ssl=_tls_verification(target)
                ),
                timeout=self._timeout,
                # Sessions are shared by all clients: never keep an upstream's cookies.
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def session(self, target_name: str) -> aiohttp.ClientSession:
        return self._sessions[target_name]


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
