"""Which headers cross the proxy, in each direction.

Client -> upstream: every end-to-end header passes (Content-Type, Accept, User-Agent, OpenAI-*,
X-Stainless-*, custom ones...), except
  - hop-by-hop headers (RFC 9110 7.6.1) and those the Connection header names;
  - Host (set for the upstream), Content-Length (recomputed for the body actually sent) and
    Content-Encoding (the server already decompressed the body it relays);
  - the client's credentials: Authorization, Proxy-Authorization, Cookie; and the proxy's own
    routing header `target`;
  - Expect (the proxy has read the whole body already).
On a translated route, where the proxy writes the body in the target's API, only what is not tied
to the client's API passes (User-Agent and W3C trace context): the versions, switches and SDK
telemetry of the client's API mean nothing to the target.
The target's own key, when it has one, goes as `Authorization: Bearer ...`. Who the client is goes
as X-Forwarded-For / X-Forwarded-Proto (see `forwarding`).
Upstream -> client: everything but hop-by-hop headers.

Both ways, a field whose name or value holds a control character (or bytes that are not UTF-8,
which could not be written back unchanged) is dropped, never relayed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from multidict import CIMultiDict, MultiMapping, istr


def _names(*names: str) -> tuple[istr, ...]:
    """Header names as istr: their case-folded form is computed once, not at every lookup."""
    return tuple(map(istr, names))


HOP_BY_HOP = _names(
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
)
_NOT_FORWARDED = (
    *HOP_BY_HOP,
    *_names("host", "content-length", "content-encoding", "authorization", "cookie", "target", "expect"),
)
_FORWARDING_NAMES = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-proto", "x-forwarded-host")
# What crosses to a target whose API is not the client's.
_TRANSLATED_KEPT = _names("user-agent", "traceparent", "tracestate", "baggage", *_FORWARDING_NAMES)
# What says who the client is; from anyone but a trusted proxy, the proxy's word replaces it.
_FORWARDING = _names(*_FORWARDING_NAMES)
_CLIENT_ADDRESS = _names("forwarded", "x-forwarded-for", "x-real-ip")
_FORWARDED_FOR, _FORWARDED, _REAL_IP, _FORWARDED_PROTO = _names(
    "x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-proto"
)
# C0 controls but HTAB, DEL, and the lone surrogates that stand for bytes that are not UTF-8.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


def _filtered(headers: Mapping[str, str], dropped: tuple[istr, ...]) -> CIMultiDict[str]:
    # Copying and removing the few names is several times cheaper than filtering each header.
    listed = headers.get("Connection")
    kept = CIMultiDict(headers)
    for name in dropped:
        if name in kept:
            kept.popall(name)
    if listed:
        for listed_name in listed.split(","):
            kept.popall(listed_name.strip(), None)
    if _may_be_unsafe("".join(map("".join, kept.items()))):
        kept = CIMultiDict((name, value) for name, value in kept.items() if not _UNSAFE.search(name + value))
    return kept


def _may_be_unsafe(text: str) -> bool:
    # Printable ASCII, the usual case, is answered by two scans in C; the pattern looks at the rest.
    return not (text.isascii() and text.isprintable()) and _UNSAFE.search(text) is not None


def never_forwarded(key_headers: tuple[str, ...]) -> tuple[istr, ...]:
    """What a relayed request loses: hop-by-hop and proxy-only headers, and every header a client
    may send its key in (each front names its own)."""
    return (*_NOT_FORWARDED, *_names(*key_headers))


def upstream_request_headers(
    client_headers: MultiMapping[str],
    authorization: str | None,
    dropped: tuple[istr, ...],
    *,
    json_body: bool,
    reads_answer: bool,
) -> CIMultiDict[str]:
    """`dropped`: never_forwarded's; `json_body`: the proxy sends a JSON body of its own;
    `reads_answer`: it decodes the answer."""
    if json_body:
        # A few lookups by name, rather than a look at each of the client's headers.
        kept = CIMultiDict((name, value) for name in _TRANSLATED_KEPT for value in client_headers.getall(name, ()))
        headers = _filtered(kept, ())
        headers["Content-Type"] = "application/json"
    else:
        headers = _filtered(client_headers, dropped)
    if reads_answer:
        # The proxy reads the answer itself: compressing it would only cost CPU at both ends.
        headers["Accept-Encoding"] = "identity"
    else:
        # Relayed bytes are never decoded here: a client that asked for no encoding gets none.
        headers.setdefault("Accept-Encoding", "identity")
    if authorization is not None:
        headers["Authorization"] = authorization
    return headers


def forwarding(headers: CIMultiDict[str], peer: str, scheme: str, *, peer_is_trusted: bool, chain_header: str) -> None:
    """X-Forwarded-For, Forwarded and X-Real-IP as a target should see them: the same policy as the
    guard's, which believes a trusted proxy's `chain_header` and nothing else.

    From a trusted proxy, the peer is appended to that chain (the proxy vouches for it) and the
    other forwarding headers, which the proxy did not vouch for, are dropped. From anyone else,
    whatever the client claimed is replaced by the peer's address: a client never chooses who the
    target thinks it is.
    """
    node = f'"[{peer}]"' if ":" in peer else peer
    if peer_is_trusted:
        chain = ", ".join(headers.getall(chain_header, ()))
        for name in _CLIENT_ADDRESS:
            if name in headers and name != chain_header.lower():
                headers.popall(name)
        hop = f"for={node}" if chain_header.lower() == _FORWARDED else peer
        headers[chain_header] = f"{chain}, {hop}" if chain else hop
        headers.setdefault(_FORWARDED_PROTO, scheme)
        return
    claimed_forwarded, claimed_real_ip = _FORWARDED in headers, _REAL_IP in headers
    for name in _FORWARDING:
        if name in headers:
            headers.popall(name)
    headers[_FORWARDED_FOR] = peer
    headers[_FORWARDED_PROTO] = scheme
    if claimed_forwarded:
        headers[_FORWARDED] = f"for={node};proto={scheme}"
    if claimed_real_ip:
        headers[_REAL_IP] = peer


def client_response_headers(upstream_headers: Mapping[str, str]) -> CIMultiDict[str]:
    return _filtered(upstream_headers, HOP_BY_HOP)
