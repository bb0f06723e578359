"""Cerbere: who the client is, IP black/white lists, the key check, strikes and bans."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import TYPE_CHECKING

from .bans import BanStore
from .client_address import IPAddress, client_address
from .keys import KeyRing
from .metrics import Metrics
from .settings import ClientKey, GuardSettings

if TYPE_CHECKING:
    from .incoming import IncomingRequest

log = logging.getLogger("mooltiproxy.guard")


@lru_cache(maxsize=4096)
def address_key(address: IPAddress | None) -> str:
    # Cached: ipaddress renders an address in pure Python, and this runs on every request.
    return str(address) if address is not None else "unknown"


class Guard:
    def __init__(self, settings: GuardSettings, keys: KeyRing, store: BanStore, metrics: Metrics):
        self._settings = settings
        self._keys = keys
        self.store = store
        self._metrics = metrics

    def address_of(self, request: IncomingRequest) -> IPAddress | None:
        return client_address(request.remote, request.headers, self._settings.trusted_proxies)

    def refusal(self, address: IPAddress | None) -> str | None:
        """Why this address is refused before anything else, or None."""
        if address is not None and address in self._settings.blacklist:
            return "blacklisted"
        if self.store.is_banned(address_key(address)):
            return "banned"
        return None

    def identify(self, authorization: str | None) -> ClientKey | None:
        return self._keys.identify(authorization)

    async def strike(self, address: IPAddress | None) -> None:
        """Counts a failed authentication; whitelisted addresses are never banned."""
        if address is not None and address in self._settings.whitelist:
            return
        self._metrics.add("mooltiproxy_strikes_total")
        if await self.store.strike(address_key(address)):
            self._metrics.add("mooltiproxy_bans_total")
            log.warning(
                "client %s banned after %d failed authentications", address_key(address), self._settings.max_tries
            )
