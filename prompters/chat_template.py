"""`chat_template`: a model's own Hugging Face chat template, rendered as transformers renders it."""

from __future__ import annotations

from typing import Any

from mooltiproxy.config.settings import Endpoint
from mooltiproxy.translation.marks import uses_template
from mooltiproxy.translation.prompting import render_chat


@uses_template("jinja")
def chat_template(messages: Any, endpoint: Endpoint, tools: Any = None) -> tuple[str, list[str]]:
    """The endpoint's template (a `templates:` entry or a built-in one such as `llama3`)."""
    return render_chat(messages, endpoint, tools)
