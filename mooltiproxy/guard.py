"""Cerbere: IP black/white lists, the bearer-key check, strikes and bans."""

from __future__ import annotations

import hmac
import ipaddress
import logging

from .settings import GuardSettings

log = logging.getLogger("mooltiproxy.guard")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(remote: str | None) -> IPAddress | None:
    """The client address as an ip_address (IPv4-mapped IPv6 unwrapped), None when not an IP."""
    if not remote:
        return None
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Guard:
    def __init__(self, settings: GuardSettings, master_key: str):
        self._settings = settings
        self._expected = f"Bearer {master_key}".encode()
        self._strikes: dict[IPAddress | None, int] = {}
        self._banned: set[IPAddress | None] = set()

    def refusal(self, address: IPAddress | None) -> str | None:
        """Why this address is refused before anything else, or None."""
        if address is not None and address in self._settings.blacklist:
            return "blacklisted"
        if address in self._banned:
            return "banned"
        return None

    def authorized(self, authorization: str | None) -> bool:
        if authorization is None:
            return False
        # Constant-time comparison; the scheme is case-insensitive (RFC 9110).
        presented = authorization.encode("utf-8", "surrogateescape")
        if presented[:7].lower() == b"bearer ":
            presented = b"Bearer " + presented[7:].strip()
        return hmac.compare_digest(presented, self._expected)

    def strike(self, address: IPAddress | None) -> bool:
        """Counts a failed authentication; True when it got the address banned."""
        if address is not None and address in self._settings.whitelist:
            return False
        strikes = self._strikes.get(address, 0) + 1
        if strikes < self._settings.max_tries:
            self._strikes[address] = strikes
            return False
        self._strikes.pop(address, None)
        self._banned.add(address)
        log.warning("client %s banned after %d failed authentications", address, strikes)
        return True
