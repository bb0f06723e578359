"""Which headers cross the proxy, in each direction.

Client -> upstream: every end-to-end header passes (Content-Type, Accept, User-Agent, OpenAI-*,
X-Stainless-*, custom ones...), except
  - hop-by-hop headers (RFC 9110 7.6.1) and those the Connection header names;
  - Host (set for the upstream), Content-Length (recomputed for the body actually sent) and
    Content-Encoding (the server already decompressed the body it relays);
  - the client's credentials: Authorization, Proxy-Authorization, Cookie; and the proxy's own
    routing header `target`;
  - Expect (the proxy has read the whole body already).
The target's own key, when it has one, goes as `Authorization: Bearer ...`.
Upstream -> client: everything but hop-by-hop headers.
"""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict, istr


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


def _filtered(headers: Mapping[str, str], dropped: tuple[istr, ...]) -> CIMultiDict:
    # Copying and removing the few names is several times cheaper than filtering each header.
    listed = headers.get("Connection")
    kept = CIMultiDict(headers)
    for name in dropped:
        if name in kept:
            kept.popall(name)
    if listed:
        for name in listed.split(","):
            kept.popall(name.strip(), None)
    return kept


def upstream_request_headers(
    client_headers: Mapping[str, str], authorization: str | None, *, json_body: bool, reads_answer: bool
) -> CIMultiDict:
    """`json_body`: the proxy sends a JSON body of its own; `reads_answer`: it decodes the answer."""
    headers = _filtered(client_headers, _NOT_FORWARDED)
    if json_body:
        headers["Content-Type"] = "application/json"
    if reads_answer:
        # The proxy reads the answer itself: compressing it would only cost CPU at both ends.
        headers["Accept-Encoding"] = "identity"
    else:
        # Relayed bytes are never decoded here: a client that asked for no encoding gets none.
        headers.setdefault("Accept-Encoding", "identity")
    if authorization is not None:
        headers["Authorization"] = authorization
    return headers


def client_response_headers(upstream_headers: Mapping[str, str]) -> CIMultiDict:
    return _filtered(upstream_headers, HOP_BY_HOP)
