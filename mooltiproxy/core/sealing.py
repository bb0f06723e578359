"""Opaque tokens the proxy hands a client and reads back: a text sealed with AES-GCM under a key
derived from the proxy key, so that a client can carry it (a thinking block's `signature`) but not
forge or alter it. A token that does not open, or opens to another text, is not trusted."""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE = 12


class Sealer:
    def __init__(self, secret: str, purpose: bytes):
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"mooltiproxy " + purpose).derive(
            secret.encode("utf-8", "surrogateescape")
        )
        self._aead = AESGCM(key)

    def seal(self, text: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, text.encode("utf-8", "surrogatepass"), None)
        return base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, token: object) -> str | None:
        """The sealed text, or None for anything this proxy did not seal."""
        if not isinstance(token, str) or not token:
            return None
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii"))
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], None).decode("utf-8", "surrogatepass")
        except (ValueError, binascii.Error, InvalidTag, UnicodeError):
            return None

    def vouches(self, token: object, text: object) -> bool:
        """Whether `token` is this proxy's seal of exactly `text`."""
        return isinstance(text, str) and self.open(token) == text
