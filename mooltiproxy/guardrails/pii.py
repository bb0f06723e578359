"""The PII detectors a `pii` guard turns on by name: a pattern each, a checksum where the thing
found has one (payment cards: Luhn; IBANs: ISO 13616's mod 97), and the characters a match is
made of, so that a stream holds back only the run of them at its end."""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Callable

from mooltiproxy.guardrails.rules import Hold, Rule, compile_pattern, run_of
from mooltiproxy.parsers.markers import partial_marker

_DIGITS = frozenset(string.digits)
_WORD = frozenset(string.ascii_letters + string.digits + "_-")


def luhn(text: str) -> bool:
    digits = [int(char) for char in text if char in _DIGITS]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def iban(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rotated = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rotated)) % 97 == 1


def phone(text: str) -> bool:
    """E.164 allows 7 to 15 digits; a national number without its country code has 9 or more
    (which leaves out dates such as 2024-01-15)."""
    digits = sum(char in _DIGITS for char in text)
    return (7 if text.startswith(("+", "00")) else 9) <= digits <= 15


def _address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _pem_hold(window: int) -> Hold:
    """A private key block is held from its BEGIN line until its END line (or `window`
    characters); elsewhere only what may begin a BEGIN line."""

    def hold(text: str) -> int:
        begin = text.rfind("-----BEGIN")
        if begin != -1 and "PRIVATE KEY-----" not in text[begin + 10 :].partition("-----END")[2]:
            return max(begin, len(text) - window)
        return len(text) - partial_marker(text, "-----BEGIN")

    return hold


def _detector(
    name: str, pattern: str, hold: Hold, check: Callable[[str], bool] | None = None
) -> tuple[str, Callable[[], Rule]]:
    return name, lambda: Rule(name, compile_pattern(pattern), hold, check)


# name -> the rule, made when a guard turns it on; the windows are the longest match of each.
DETECTORS: dict[str, Callable[[], Rule]] = dict(
    [
        _detector(
            "email",
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            run_of(frozenset(string.ascii_letters + string.digits + "._%+-@"), 254),  # RFC 5321's limit
        ),
        _detector(
            "phone",
            # E.164 (+ or 00, then 7 to 15 digits), or a national number in groups (555 123 4567).
            r"(?:\+|\b00)[1-9](?:[ .-]?\(?\d+\)?){6,14}\b|\(?\b\d{2,4}\)?[ .-]\d{2,4}[ .-]\d{2,4}(?:[ .-]\d{2,4})?\b",
            run_of(frozenset(string.digits + " .-()+"), 24),
            phone,
        ),
        _detector(
            "payment_card",
            r"\b(?:\d[ -]?){12,18}\d\b",
            run_of(frozenset(string.digits + " -"), 37),
            luhn,
        ),
        _detector(
            "iban",
            r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
            run_of(frozenset(string.ascii_uppercase + string.digits + " "), 42),
            iban,
        ),
        _detector(
            "ipv4",
            r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
            run_of(frozenset(string.digits + "."), 15),
            _address,
        ),
        _detector(
            "ipv6",
            r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?",
            run_of(frozenset(string.hexdigits + ":."), 45),
            lambda text: text.count(":") >= 2 and _address(text),
        ),
        # Secrets: OpenAI's and Anthropic's keys (sk-, sk-proj-, sk-ant-), AWS access key ids,
        # GitHub's tokens, and PEM private keys.
        _detector("api_key", r"\bsk-[A-Za-z0-9_-]{20,200}", run_of(_WORD, 210)),
        _detector("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", run_of(_WORD, 20)),
        _detector(
            "github_token",
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
            run_of(_WORD, 266),
        ),
        _detector(
            "private_key",
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
            _pem_hold(8192),
        ),
    ]
)
