"""Models' own chat templates, and what each tool parser's model writes to call a tool."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import GRAMMAR_CALL
from support import DATA

QWEN = DATA / "tool-templates" / "Qwen-Qwen2.5-7B-Instruct.jinja"

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def model_folder(tmp_path: Path, template: Path, **tokens: str) -> str:
    """A model folder as its repository has it: chat_template.jinja and tokenizer_config.json."""
    folder = tmp_path / template.stem
    folder.mkdir()
    shutil.copy(template, folder / "chat_template.jinja")
    (folder / "tokenizer_config.json").write_text(json.dumps(tokens))
    return str(folder)


LLAMA31 = DATA / "tool-templates" / "meta-llama-Llama-3.1-8B-Instruct.jinja"

NEMO = DATA / "tool-templates" / "mistralai-Mistral-Nemo-Instruct-2407.jinja"
SMALL_32 = DATA / "tool-templates" / "Mistral-Small-3.2-24B-Instruct-2506.jinja"

QWEN3_CODER = DATA / "tool-templates" / "Qwen-Qwen3-Coder-30B-A3B-Instruct.jinja"
XML_CALL = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"

# Each parser with a model's own template, what that model writes to call get_weather(city=Paris),
# and how the template writes that call back in the history; grammar with Mistral 7B v0.1's
# template from the reference set, which knows no tools and refuses turns that do not alternate.
PARSERS: dict[str, tuple[Path | str, dict[str, str], str, str]] = {
    "hermes": (QWEN, {"eos_token": "<|im_end|>"}, CALL, CALL),
    "qwen3_coder": (QWEN3_CODER, {"eos_token": "<|im_end|>"}, XML_CALL, XML_CALL),
    "llama3_json": (
        LLAMA31,
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    ),
    "mistral": (
        SMALL_32,
        {"bos_token": "<s>", "eos_token": "</s>"},
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',
        '[ARGS]{"city": "Paris"}',
    ),
    "grammar": ("mistralai/Mistral-7B-Instruct-v0.1", {}, GRAMMAR_CALL, GRAMMAR_CALL),
}

REFERENCE_TEMPLATES = {case["name"]: case for case in json.loads((DATA / "chat-templates.json").read_text())}


def template_entry(tmp_path: Path, template: Path | str, tokens: dict[str, str]) -> dict[str, str]:
    """A `templates:` entry: a model folder for a template file, or a reference template inline."""
    if isinstance(template, Path):
        return {"tokenizer_config": model_folder(tmp_path, template, **tokens)}
    case = REFERENCE_TEMPLATES[template]
    return {"chat_template": case["chat_template"], "bos_token": case["bos_token"], "eos_token": case["eos_token"]}
