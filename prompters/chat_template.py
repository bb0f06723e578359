"""`chat_template`: a model's own Hugging Face chat template, rendered as transformers renders it."""

from __future__ import annotations

from typing import Any

from mooltiproxy.plugin import Endpoint, prompter, render_chat


@prompter("jinja")
def chat_template(messages: Any, endpoint: Endpoint, tools: Any = None) -> tuple[str, list[str]]:
    """The endpoint's template (a `templates:` entry or a built-in one such as `llama3`)."""
    return render_chat(messages, endpoint, tools)
