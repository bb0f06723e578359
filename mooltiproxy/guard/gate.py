"""Cerbere: who the client is, IP black/white lists, the key check, strikes and bans."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from aiohttp import web

from mooltiproxy.config.settings import MASTER, ClientKey, GuardSettings, Limits
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.metrics import Metrics
from mooltiproxy.guard.client_address import IPAddress, client_origin, parse_address
from mooltiproxy.guard.keys import KeyRing, bearer_token, presents_a_key
from mooltiproxy.state.store import FOREVER, Ban, StateStore

log = logging.getLogger("mooltiproxy.guard")


@lru_cache(maxsize=4096)
def address_key(address: IPAddress | None) -> str:
    # Cached: ipaddress renders an address in pure Python, and behind a trusted proxy this runs on
    # every request (other peers' callers are remembered whole).
    return str(address) if address is not None else UNIDENTIFIED


# The bucket of clients a trusted proxy could not name (`for=unknown`, garbage): their strikes and
# bans are their own, never the proxy's.
UNIDENTIFIED = "unidentified"
# Peers remembered with what they resolve to; beyond this many the memory starts afresh.
_KNOWN_PEERS = 4096


@dataclass(frozen=True, slots=True)
class Caller:
    """Where a request comes from, as the guard sees it."""

    address: IPAddress | None
    key: str  # how bans and logs name the address
    blacklisted: bool
    via_trusted_proxy: bool  # the TCP peer is a trusted proxy (its forwarding header is believed)
    is_trusted_proxy: bool  # the caller is a trusted proxy itself: never struck, never banned


class Guard:
    def __init__(
        self,
        settings: GuardSettings,
        keys: KeyRing,
        store: StateStore,
        metrics: Metrics,
        key_headers: tuple[str, ...] = (),
    ):
        self._settings = settings
        self._keys = keys
        # Where some clients send their key instead of Authorization (each front says its own).
        self.key_headers = key_headers
        self.store = store
        self._metrics = metrics
        # Callers by TCP peer, for peers no trusted proxy speaks through: working one out (parsing,
        # list lookups, ipaddress hashing in pure Python) would cost more than the rest of the guard.
        self._peers: dict[str | None, Caller] = {}

    def caller(self, request: web.BaseRequest) -> Caller:
        caller = self._peers.get(request.remote)
        if caller is not None:
            return caller
        settings = self._settings
        origin = client_origin(
            request.remote, request.headers, settings.trusted_proxies, settings.client_address_header
        )
        address = origin.address
        peer = parse_address(request.remote)
        trusted = peer is not None and peer in settings.trusted_proxies
        blacklisted = address is not None and address in settings.blacklist
        caller = Caller(address, address_key(address), blacklisted, trusted, origin.is_trusted_proxy)
        if not trusted:  # else each request may name another client
            if len(self._peers) >= _KNOWN_PEERS:
                self._peers.clear()
            self._peers[request.remote] = caller
        return caller

    def limits_of(self, client: ClientKey) -> Limits:
        """A client key's own limits, else the default for client keys (the proxy key's are its own)."""
        if client.limits is not None:
            return client.limits
        return self._settings.master_limits if client.name == MASTER else self._settings.default_limits

    def check_address(self, caller: Caller) -> None:
        """Raises the 403 of a blacklisted or banned address, saying which and for how long."""
        if caller.blacklisted:
            log.warning("refused blacklisted client %s", caller.key)
            raise ProxyError(403, "Access denied: this address is blacklisted", code="ip_blacklisted")
        ban = self.store.ban_of(caller.key)
        if ban is not None:
            raise _banned(caller, ban)

    def presents_credentials(self, headers: Mapping[str, str]) -> bool:
        return "Authorization" in headers or any(name in headers for name in self.key_headers)

    async def authenticate(self, caller: Caller, headers: Mapping[str, str]) -> ClientKey:
        """The client the key belongs to; else a 401, and a strike when a key was presented. The key
        comes as `Authorization: Bearer`, or in one of `key_headers`; when both come, they must
        hold the same key."""
        authorization = headers.get("Authorization")
        for name in self.key_headers:
            api_key = headers.get(name)
            if api_key is None:
                continue
            if authorization is not None and bearer_token(authorization) != api_key.strip():
                raise _unauthorized(f"Authorization and {name} hold different keys")
            authorization = f"Bearer {api_key.strip()}"
        client = self._keys.identify(authorization)
        if client is not None:
            return client
        if not presents_a_key(authorization):
            # Nothing was guessed (a probe, a client not yet configured): no strike.
            log.info("client %s: no API key", caller.key)
            raise _unauthorized("Missing API key: send it as 'Authorization: Bearer <key>'")
        log.warning("client %s: invalid API key", caller.key)
        await self._strike(caller)
        raise _unauthorized("Invalid API key")

    async def _strike(self, caller: Caller) -> None:
        """Counts a wrong key, in one atomic step of the store: a guess from an address that is
        banned by now (by another process, or by a guess made at the same moment) is refused as
        banned, so exactly max_tries guesses are ever checked. Trusted proxies and whitelisted
        addresses are never banned."""
        if caller.is_trusted_proxy or (caller.address is not None and caller.address in self._settings.whitelist):
            return
        self._metrics.add("mooltiproxy_strikes_total")
        settings = self._settings
        result = await self.store.strike(caller.key, settings.max_tries, settings.ban_seconds)
        if result.already_banned is not None:
            raise _banned(caller, result.already_banned)
        if result.new_ban is not None:
            self._metrics.add("mooltiproxy_bans_total")
            log.warning(
                "client %s banned after %d wrong keys (an operator lifts it with: mooltiproxy unban %s)",
                caller.key,
                settings.max_tries,
                caller.key,
            )


def _banned(caller: Caller, ban: Ban) -> ProxyError:
    """The 403 of a ban, saying how long it lasts."""
    log.warning("refused banned client %s", caller.key)
    if ban.until == FOREVER:
        return ProxyError(
            403,
            "Access denied: this address is banned after repeated failed logins, until an operator lifts the ban",
            code="ip_banned",
        )
    seconds = max(1, math.ceil(ban.until - time.time()))
    return ProxyError(
        403,
        f"Access denied: this address is banned for {seconds} more seconds after repeated failed logins",
        code="ip_banned",
        headers={"Retry-After": str(seconds)},
    )


def _unauthorized(message: str) -> ProxyError:
    return ProxyError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
