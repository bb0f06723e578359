"""Images in chat messages (the pivot's `image_url` parts), made ready for a route's target:

- `placeholder` (the default): each image becomes a short text saying the model reads text only,
  with a log line, since a 400 would stall an agent's whole session on one screenshot;
- `refuse`: a 400 naming the image;
- `vision`: the images stay, checked: a data URL's media type must be an image type and its size
  within `max_image_bytes`; a URL is passed on only where the route allows it (`image_urls`), and
  the proxy itself never fetches one.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from typing import Any

from mooltiproxy.config.settings import Endpoint
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.serving.context import MapperContext

log = logging.getLogger("mooltiproxy.images")

PLACEHOLDER = "[image omitted: this model reads text only]"
MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:([\w/+.-]+);base64,(.*)", re.S)


def with_images_ready(messages: Any, endpoint: Endpoint, context: MapperContext) -> Any:
    """The messages with their image parts as the route's `images` says; others as they are. An
    image left out is counted (`images_omitted`)."""
    if not isinstance(messages, list) or not any(_has_image(message) for message in messages):
        return messages
    ready = []
    for index, message in enumerate(messages):
        if _has_image(message):
            if endpoint.images == "placeholder":
                context.count("images_omitted", sum(map(_is_image, message["content"])))
            parts = [
                _ready(part, endpoint, f"messages[{index}].content[{number}]")
                for number, part in enumerate(message["content"])
            ]
            message = {**message, "content": parts}
        ready.append(message)
    return ready


def image_url(part: Mapping[str, Any]) -> str | None:
    """An image part's URL (or data URL), as OpenAI writes it."""
    source = part.get("image_url")
    url = source.get("url") if isinstance(source, Mapping) else source
    return url if isinstance(url, str) else None


def _has_image(message: Any) -> bool:
    content = message.get("content") if isinstance(message, dict) else None
    return isinstance(content, list) and any(_is_image(part) for part in content)


def _is_image(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") == "image_url"


def _ready(part: Any, endpoint: Endpoint, where: str) -> Any:
    if not _is_image(part):
        return part
    if endpoint.images == "refuse":
        raise _invalid(f"{where}: this route takes text only (images: refuse)", where)
    if endpoint.images == "placeholder":
        log.info("%s: an image is replaced by a placeholder: the route's model reads text only", where)
        return {"type": "text", "text": PLACEHOLDER}
    url = image_url(part)
    if url is None:
        raise _invalid(f"{where}: an image_url part needs a url", where)
    data = _DATA_URL.fullmatch(url)
    if data is None:
        if not url.startswith(("http://", "https://")):
            raise _invalid(f"{where}: an image must be a data URL or an http(s) URL", where)
        if not endpoint.image_urls:
            raise _invalid(f"{where}: this route takes images as data URLs only (image_urls: false)", where)
        return part
    media_type, payload = data.groups()
    if media_type not in MEDIA_TYPES:
        raise _invalid(f"{where}: media type {media_type} is not one of {', '.join(sorted(MEDIA_TYPES))}", where)
    if len(payload) * 3 // 4 > endpoint.max_image_bytes:
        raise _invalid(f"{where}: the image is larger than {endpoint.max_image_bytes} bytes", where, status=413)
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{where}: the image's data is not base64", where) from None
    return part


def _invalid(message: str, param: str, status: int = 400) -> ProxyError:
    return ProxyError(status, message, code="invalid_image", param=param)
