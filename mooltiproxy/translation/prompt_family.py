"""Whether a route's prompt format fits the model its target serves: a Llama 2 prompter in front of
Qwen costs tokens and quality silently. Each model family is known by its name, and its chat format
by a marker its prompts always hold; a route whose prompt lacks the marker of the target's model
is said once, at start."""

from __future__ import annotations

import re

from mooltiproxy.config.settings import Target

# (model ids of the family, the marker its prompts hold, the family's name)
FAMILIES = (
    (re.compile(r"llama-?2", re.I), "[INST]", "Llama 2"),
    (re.compile(r"llama-?3", re.I), "<|start_header_id|>", "Llama 3"),
    (re.compile(r"qwen|hermes|\byi-", re.I), "<|im_start|>", "ChatML (Qwen, Hermes)"),
    (re.compile(r"mistral|mixtral", re.I), "[INST]", "Mistral"),
    (re.compile(r"gemma", re.I), "<start_of_turn>", "Gemma"),
)
_PROBE = [{"role": "user", "content": "Hello"}]


def mismatched_routes(target: Target, model_id: str | None) -> list[str]:
    """A line for each route of the target whose prompt format is plainly another family's."""
    family = next(((marker, name) for pattern, marker, name in FAMILIES if model_id and pattern.search(model_id)), None)
    if family is None:
        return []
    marker, name = family
    lines = []
    for path, endpoint in target.endpoints.items():
        if endpoint.prompter is None:
            continue
        try:
            prompt, _ = endpoint.prompter(_PROBE, endpoint, None, {})
        except Exception:  # noqa: BLE001 (a template that refuses the probe says nothing of its family)
            continue
        if marker not in prompt:
            lines.append(
                f"targets.{target.name}.mapping.{path}: the target serves {model_id} ({name}), whose prompts hold "
                f"{marker}, but this route's prompt format ({endpoint.prompter_name}) does not; "
                "prompter: chat_template with the model's own template renders it as the model was trained"
            )
    return lines
