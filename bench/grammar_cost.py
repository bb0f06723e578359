"""What `tool_parser: grammar` (or a forced tool_choice) costs TGI before the first token: the time
to compile the proxy's JSON grammar into a token index over a real vocabulary.

    pip install outlines-core            # in any environment; not a dependency of the proxy
    pip download --no-deps mistral_common && unzip -j mistral_common-*.whl '*/tekken_240911.json'
    PYTHONPATH=. python bench/grammar_cost.py tekken_240911.json

TGI's shards turn a JSON grammar into a regular expression, then into an index of which tokens may
follow each state (outlines' RegexGuide), before the request's first token, and keep the last 32
in an LRU cache keyed by the grammar: a client that sends the same tools every turn (coding agents
do) pays once per shard. This compiles the proxy's grammar for tool sets of growing size with
outlines-core's index over Mistral's 131k-token Tekken vocabulary (the tokenizer of Nemo and Small
3.x), prints the median of `--runs` compilations, and says nothing of TGI's own version's speed.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from typing import Any

from outlines_core import Index, Vocabulary
from outlines_core.json_schema import build_regex_from_schema

from mooltiproxy.backends.tgi.grammar import tool_grammar


def tool(name: str, **properties: str) -> dict[str, Any]:
    schema = {name: {"type": kind} for name, kind in properties.items()}
    parameters = {"type": "object", "properties": schema, "required": list(properties)}
    return {"type": "function", "function": {"name": name, "description": name, "parameters": parameters}}


TOOLS = [
    tool("get_weather", city="string"),
    tool("read_file", path="string", offset="integer", limit="integer"),
    tool("write_file", path="string", content="string"),
    tool("run_command", command="string", timeout="integer", background="boolean"),
    tool("search", query="string", max_results="integer"),
    tool("edit_file", path="string", old="string", new="string", all="boolean"),
    tool("list_directory", path="string", recursive="boolean"),
    tool("fetch_url", url="string", prompt="string"),
]


def vocabulary(path: str) -> Vocabulary:
    """Tekken's ordinary tokens (its special tokens take the first ids), as outlines-core takes them."""
    tekken = json.load(open(path))
    specials = tekken["config"]["default_num_special_tokens"]
    size = tekken["config"]["default_vocab_size"] - specials
    tokens: dict[bytes, list[int]] = {}
    for entry in tekken["vocab"][:size]:
        tokens.setdefault(base64.b64decode(entry["token_bytes"]), []).append(specials + entry["rank"])
    return Vocabulary(2, tokens)  # </s> is id 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tekken", help="tekken_240911.json, from the mistral_common wheel")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    vocab = vocabulary(args.tekken)
    print("tools  tool_choice  regex chars  compile (median)")
    for count in (1, 4, 8):
        for choice in ("auto", "required"):
            grammar = tool_grammar(TOOLS[:count], choice)["value"]
            regex = build_regex_from_schema(json.dumps(grammar))
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                Index(regex, vocab)
                times.append(time.perf_counter() - start)
            print(f"{count:5}  {choice:11}  {len(regex):11}  {statistics.median(times):6.2f} s")


if __name__ == "__main__":
    main()
