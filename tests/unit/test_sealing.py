"""Sealed tokens: what the proxy hands a client (a thinking block's signature, a reasoning item's
encrypted_content) opens only with the same proxy key, unaltered."""

from __future__ import annotations

import pytest

from mooltiproxy.core.sealing import Sealer

TEXT = "I should call get_weather. Ünïcödé 😀"


def test_a_sealed_text_opens_with_the_same_key_only():
    sealer = Sealer("proxy-key", b"reasoning")
    token = sealer.seal(TEXT)
    assert TEXT not in token and sealer.open(token) == TEXT
    assert sealer.vouches(token, TEXT) and not sealer.vouches(token, TEXT + ".")
    assert Sealer("proxy-key", b"reasoning").open(token) == TEXT  # another worker with the same key
    assert Sealer("another-key", b"reasoning").open(token) is None
    assert Sealer("proxy-key", b"another purpose").open(token) is None
    assert sealer.seal(TEXT) != token  # a nonce each time


@pytest.mark.parametrize("forged", ["", "!!", "AAAA", None, 42, "x" * 64])
def test_anything_else_opens_to_nothing(forged):
    sealer = Sealer("proxy-key", b"reasoning")
    assert sealer.open(forged) is None
    assert not sealer.vouches(forged, None) and not sealer.vouches(forged, "")


def test_an_altered_token_opens_to_nothing():
    sealer = Sealer("proxy-key", b"reasoning")
    token = sealer.seal(TEXT)
    # Not the last characters: base64's padding bits may change without changing a byte.
    for at in (0, len(token) // 4, len(token) // 2):
        flipped = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
        assert sealer.open(flipped) is None
