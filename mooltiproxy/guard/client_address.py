"""Who the client is: the TCP peer, unless the peer is a trusted proxy that says who it relays for.

Only then is the one header the operator names read (`X-Forwarded-For`, or `Forwarded` of RFC 7239),
right to left, skipping trusted proxies: the first untrusted hop is the client. Any other forwarding
header, and any header sent by anyone else, changes nothing: a client cannot add a `Forwarded` of
its own to override what the load balancer appended to `X-Forwarded-For`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from multidict import MultiMapping

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


@dataclass(frozen=True, slots=True)
class Origin:
    """Who a request comes from."""

    address: IPAddress | None  # None: a hop the trusted proxies could not name (or no peer address)
    is_trusted_proxy: bool  # no client behind the trusted proxies: one of them asked itself


def client_origin(peer: str | None, headers: MultiMapping[str], trusted: AddressList, header: str) -> Origin:
    """The peer; or, from a trusted proxy, the first hop of `header` (and of it only) that is not a
    trusted proxy, read from the right."""
    address = parse_address(peer)
    if address is None or address not in trusted:
        return Origin(address, False)
    for hop in reversed(_hops(headers, header)):
        hop_address = parse_address(hop)
        if hop_address is None:
            return Origin(None, False)  # `unknown`, an obfuscated node, garbage: an unidentified client
        if hop_address not in trusted:
            return Origin(hop_address, False)
        address = hop_address
    return Origin(address, True)


def _hops(headers: MultiMapping[str], header: str) -> list[str]:
    joined = ",".join(value for value in headers.getall(header, []) if value)
    if header == "Forwarded":
        return [_forwarded_for(element) for element in joined.split(",")] if joined else []
    return [hop.strip() for hop in joined.split(",") if hop.strip()]


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
