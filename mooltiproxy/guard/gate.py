"""Cerbere: who the client is, IP black/white lists, the key check, strikes and bans."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

from aiohttp import web

from mooltiproxy.config.settings import ClientKey, GuardSettings
from mooltiproxy.core.metrics import Metrics
from mooltiproxy.guard.bans import BanStore
from mooltiproxy.guard.client_address import IPAddress, client_address, parse_address
from mooltiproxy.guard.keys import KeyRing

log = logging.getLogger("mooltiproxy.guard")


@lru_cache(maxsize=4096)
def address_key(address: IPAddress | None) -> str:
    # Cached: ipaddress renders an address in pure Python, and behind a trusted proxy this runs on
    # every request (other peers' callers are remembered whole).
    return str(address) if address is not None else "unknown"


# Peers remembered with what they resolve to; beyond this many the memory starts afresh.
_KNOWN_PEERS = 4096


@dataclass(frozen=True, slots=True)
class Caller:
    """Where a request comes from, as the guard sees it."""

    address: IPAddress | None
    key: str  # how bans and logs name the address
    blacklisted: bool
    via_trusted_proxy: bool  # the TCP peer is a trusted proxy (its forwarding headers are believed)


class Guard:
    def __init__(self, settings: GuardSettings, keys: KeyRing, store: BanStore, metrics: Metrics):
        self._settings = settings
        self._keys = keys
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
        address = client_address(request.remote, request.headers, settings.trusted_proxies)
        peer = parse_address(request.remote)
        trusted = peer is not None and peer in settings.trusted_proxies
        caller = Caller(address, address_key(address), address is not None and address in settings.blacklist, trusted)
        if not trusted:  # else each request may name another client
            if len(self._peers) >= _KNOWN_PEERS:
                self._peers.clear()
            self._peers[request.remote] = caller
        return caller

    def refusal(self, caller: Caller) -> str | None:
        """Why this caller is refused before anything else, or None."""
        if caller.blacklisted:
            return "blacklisted"
        if self.store.is_banned(caller.key):
            return "banned"
        return None

    def identify(self, authorization: str | None) -> ClientKey | None:
        return self._keys.identify(authorization)

    async def strike(self, caller: Caller) -> None:
        """Counts a failed authentication; whitelisted addresses are never banned."""
        if caller.address is not None and caller.address in self._settings.whitelist:
            return
        self._metrics.add("mooltiproxy_strikes_total")
        if await self.store.strike(caller.key):
            self._metrics.add("mooltiproxy_bans_total")
            log.warning("client %s banned after %d failed authentications", caller.key, self._settings.max_tries)
