"""Client keys: kept as SHA-256 digests, compared in constant time; headers once verified are remembered."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from mooltiproxy.config.settings import MASTER, ClientKey, key_digest
from mooltiproxy.core.errors import ConfigError

# Authorization headers remembered once verified; beyond this many, new ones are verified each time.
_REMEMBERED_HEADERS = 1024


def bearer_token(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header (the scheme is case-insensitive)."""
    if authorization is None or authorization[:7].lower() != "bearer ":
        return None
    return authorization[7:].strip() or None


def presents_a_key(authorization: str | None) -> bool:
    """Whether the header holds any credential at all (an empty `Bearer` holds none)."""
    if authorization is None:
        return False
    credential = authorization.strip()
    return bool(credential) and credential.lower() != "bearer"


class KeyRing:
    """Finds which client a presented key belongs to, comparing it with every known key."""

    def __init__(self, clients: Iterable[ClientKey]):
        self._clients = tuple(clients)
        # Verified headers, to skip the digest and comparisons when the same header comes again.
        # Only a header that matched gets in, and a dict probe compares strings only once their
        # (per-process keyed) 64-bit hashes are equal, so its timing tells nothing about a key.
        self._verified: dict[str, ClientKey] = {}

    def identify(self, authorization: str | None) -> ClientKey | None:
        if authorization is None:
            return None
        client = self._verified.get(authorization)
        if client is None:
            client = self._check(authorization)
            if client is not None and len(self._verified) < _REMEMBERED_HEADERS:
                self._verified[authorization] = client
        return client

    def _check(self, authorization: str) -> ClientKey | None:
        token = bearer_token(authorization)
        if token is None:
            return None
        digest = key_digest(token)
        found = None
        # No early exit: the time taken does not depend on which key matched, or how closely.
        for client in self._clients:
            if hmac.compare_digest(digest, client.digest) and found is None:
                found = client
        return found


def keyring(master_key: str, clients: Iterable[ClientKey]) -> KeyRing:
    """The proxy key's holder (every target, the admin API) and the named clients."""
    master = ClientKey(MASTER, key_digest(master_key))
    for client in clients:
        if hmac.compare_digest(client.digest, master.digest):
            raise ConfigError([f"clients.{client.name}: the same key as the proxy key"])
    return KeyRing([master, *clients])
