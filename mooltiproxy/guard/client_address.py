"""Who the client is: the TCP peer, unless the peer is a trusted proxy that says who it relays for.

Only then are `Forwarded` (RFC 7239) or `X-Forwarded-For` read, right to left, skipping trusted
proxies: the first untrusted hop is the client. A header sent by anyone else changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import lru_cache

from mooltiproxy.config.settings import AddressList

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=4096)
def parse_address(text: str | None) -> IPAddress | None:
    """An IP address (IPv4-mapped IPv6 unwrapped, zone dropped), or None when it is not one."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str | None, headers: Mapping[str, str], trusted: AddressList) -> IPAddress | None:
    address = parse_address(peer)
    if address is None or address not in trusted:
        return address
    for hop in reversed(_forwarded_hops(headers)):
        hop_address = parse_address(hop)
        if hop_address is None:
            break  # unreadable: keep the last hop a trusted proxy vouched for
        address = hop_address
        if address not in trusted:
            break
    return address


def _forwarded_hops(headers: Mapping[str, str]) -> list[str]:
    if hasattr(headers, "getall"):
        forwarded = ",".join(headers.getall("Forwarded", []))
        forwarded_for = ",".join(headers.getall("X-Forwarded-For", []))
    else:
        forwarded, forwarded_for = headers.get("Forwarded", ""), headers.get("X-Forwarded-For", "")
    if forwarded:
        return [_forwarded_for(element) for element in forwarded.split(",")]
    return [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]


def _forwarded_for(element: str) -> str:
    """The node of an RFC 7239 element's `for=` parameter, without quotes, brackets or port."""
    for pair in element.split(";"):
        name, _, value = pair.strip().partition("=")
        if name.lower() != "for":
            continue
        node = value.strip().strip('"')
        if node.startswith("["):
            return node[1 : node.find("]")] if "]" in node else ""
        return node.split(":", 1)[0] if node.count(":") == 1 else node
    return ""
