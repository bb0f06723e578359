"""Makes chat-templates-parts.json: real chat templates rendered by transformers itself, with message
content sent as lists of text parts. Run once, by hand, where transformers is installed:

    python render_with_transformers.py TEMPLATES_FOLDER > chat-templates-parts.json

TEMPLATES_FOLDER holds `<model>.jinja` files (llama.cpp keeps copies of many models' templates in
models/templates/, shipped in llama_cpp_python's source distribution). The suite does not need
transformers: it compares the proxy's prompts with the ones stored here.

transformers passes a list of parts to every template. A template that reads content as a string
gets the parts joined with newlines instead (the proxy's rule, since such a template would print the
list itself), so those cases are rendered from the joined messages.
"""

import json
import sys
from pathlib import Path

from transformers.utils.chat_template_utils import render_jinja_template

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mooltiproxy.config.templates import reads_content_parts  # noqa: E402

CONVERSATION = [
    {"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Describe the sea"}, {"type": "text", "text": " in two parts."}],
    },
    {"role": "assistant", "content": "Wet. Wide."},
    {"role": "user", "content": [{"type": "text", "text": "Thanks!"}]},
]
TOKENS = {
    "gemma": ("<bos>", "<eos>"),
    "mistral": ("<s>", "</s>"),
    "devstral": ("<s>", "</s>"),
    "ministral": ("<s>", "</s>"),
    "llama": ("<|begin_of_text|>", "<|eot_id|>"),
}


def joined(messages: list[dict]) -> list[dict]:
    return [
        {**m, "content": "\n".join(p["text"] for p in m["content"])} if isinstance(m["content"], list) else m
        for m in messages
    ]


def main(folder: str) -> None:
    cases = []
    for path in sorted(Path(folder).glob("*.jinja")):
        source = path.read_text()
        family = next((key for key in TOKENS if key in path.stem.lower()), None)
        bos, eos = TOKENS.get(family, ("", ""))
        parts = reads_content_parts(source)
        messages = CONVERSATION if parts else joined(CONVERSATION)
        try:
            rendered = render_jinja_template(
                [messages], chat_template=source, add_generation_prompt=True, bos_token=bos, eos_token=eos
            )[0][0]
        except Exception as exc:  # the template refuses this conversation: not a case
            print(f"skipped {path.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        cases.append(
            {
                "name": path.stem,
                "chat_template": source,
                "content_parts": parts,
                "messages": CONVERSATION,
                "bos_token": bos,
                "eos_token": eos,
                "expected": rendered,
            }
        )
    json.dump(cases, sys.stdout, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main(sys.argv[1])
