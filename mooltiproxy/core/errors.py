"""Errors the proxy raises, and OpenAI's shape of their bodies (a front may write its own)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import urlsplit

# OpenAI's error `type` for each status the proxy produces itself.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    424: "api_error",
    429: "rate_limit_error",
}


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` lists every reason, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class ProxyError(Exception):
    """A request the proxy answers itself with an OpenAI-shaped error.

    Mappers raise it too (for instance on a request that has no meaning for the target).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers


class ContextLengthExceeded(ProxyError):
    """A prompt that leaves no room for a single new token in the target's context window."""

    def __init__(self, limit: int, prompt_tokens: int, new_tokens: int):
        super().__init__(
            400,
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + new_tokens} tokens ({prompt_tokens} in the messages, {new_tokens} in the completion). "
            "Please reduce the length of the messages or completion.",
            code="context_length_exceeded",
            param="messages",
        )
        self.limit = limit
        self.prompt_tokens = prompt_tokens


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    error_type = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    payload = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return json.dumps(payload).encode()


def shown_url(url: str) -> str:
    """A URL fit for a message: without credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
