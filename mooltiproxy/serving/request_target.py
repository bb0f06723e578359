"""Turns the request target into the path that is looked up in a target's mapping.

Paths are matched exactly after percent-decoding. Anything that could make an exposed subset of
endpoints reach another one through an upstream's own normalisation is refused outright.
"""

from __future__ import annotations

from urllib.parse import unquote

from mooltiproxy.core.errors import ProxyError


def split_request_target(raw_target: str) -> tuple[str, str]:
    """Returns (decoded path, raw query string); raises a 400 ProxyError for a dubious path."""
    raw_path, _, query = raw_target.partition("?")
    if not raw_path.startswith("/"):
        raise _bad_path("the request path must start with '/'")
    if "%" in raw_path:
        lowered = raw_path.lower()
        if "%2f" in lowered or "%5c" in lowered:
            raise _bad_path("encoded '/' or '\\' in the request path")
        try:
            if not _well_formed_escapes(raw_path):
                raise ValueError
            path = unquote(raw_path, errors="strict")
        except ValueError:  # UnicodeDecodeError included
            raise _bad_path("malformed percent-encoding in the request path") from None
    else:
        path = raw_path
    if "//" in path or "\\" in path:
        raise _bad_path("empty segment or backslash in the request path")
    if "." in path and any(segment in (".", "..") for segment in path.split("/")):
        raise _bad_path("'.' or '..' segment in the request path")
    if not path.isprintable():
        raise _bad_path("control character in the request path")
    return path, query


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _well_formed_escapes(raw_path: str) -> bool:
    """Every '%' starts a two-hex-digit escape (unquote would silently keep a stray one)."""
    return all(len(part) >= 2 and _HEX_DIGITS.issuperset(part[:2]) for part in raw_path.split("%")[1:])


def _bad_path(reason: str) -> ProxyError:
    return ProxyError(400, f"Refused request path: {reason}", code="invalid_path")
