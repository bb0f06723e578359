"""CORS: preflights are answered without a key; real responses echo the request's Origin."""

from __future__ import annotations

from aiohttp import web


def is_preflight(request: web.BaseRequest) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def preflight_response(request: web.BaseRequest) -> web.Response:
    headers = {
        "Access-Control-Allow-Methods": request.headers["Access-Control-Request-Method"],
        "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "*"),
        "Access-Control-Max-Age": "600",
    }
    if "Origin" not in request.headers:
        headers["Access-Control-Allow-Origin"] = "*"
    return web.Response(status=200, headers=headers)


def add_allow_origin(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Every response to a cross-origin request carries its Origin back."""
    origin = request.headers.get("Origin")
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
