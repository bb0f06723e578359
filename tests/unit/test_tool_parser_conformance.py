"""The tool parsers against the peers' own test cases (tests/data/tool-parser-cases.json): each
model output read whole, then streamed cut in several ways, must give the case's content and calls;
a streamed answer must read exactly as the whole one."""

from __future__ import annotations

import json

import pytest

from mooltiproxy.parsers.tools import TOOL_PARSERS

from conftest import DATA
from support.fake_tgi import tokenize

CORPUS = json.loads((DATA / "tool-parser-cases.json").read_text())
CASES = CORPUS["cases"]


def calls_of(calls: list[dict]) -> list[dict]:
    return [
        {"name": call["function"]["name"], "arguments": json.loads(call["function"]["arguments"])} for call in calls
    ]


def streamed(output: str, parser: str, tools: list, pieces: list[str]) -> tuple[str, list[dict]]:
    assert "".join(pieces) == output
    stream = TOOL_PARSERS[parser].stream(tools)
    text, calls = "", []
    for piece in [*pieces, None]:
        released, completed = stream.feed(piece) if piece is not None else stream.flush()
        text, calls = text + released, calls + completed
    return text, calls


def cuts(output: str) -> dict[str, list[str]]:
    """The same output as a stream in several ways: by the fake TGI's tokens, one character at a
    time, and in chunks of 3 and 7 characters."""
    return {
        "tokens": tokenize(output),
        "characters": list(output),
        **{f"chunks of {size}": [output[i : i + size] for i in range(0, len(output), size)] for size in (3, 7)},
    }


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_whole_and_streamed(case):
    tools = CORPUS["toolsets"].get(case.get("tools", ""), [])
    content, calls = TOOL_PARSERS[case["parser"]].parse(case["output"], tools)
    assert (content, calls_of(calls)) == (case["content"], case["calls"]), case["source"]
    for way, pieces in cuts(case["output"]).items():
        text, streamed_calls = streamed(case["output"], case["parser"], tools, pieces)
        assert calls_of(streamed_calls) == case["calls"], way
        # The stream's text is the whole answer's content, up to the blanks around calls.
        assert text.strip() == (case["content"] or "").strip(), way


def test_every_parser_has_cases_from_its_peers_and_every_difference_says_why():
    assert {case["parser"] for case in CASES} >= {"hermes", "llama3_json", "mistral", "qwen3_coder"}
    assert all(case["source"] for case in CASES)
    assert all(len(case["difference"]) > 40 for case in CASES if "difference" in case)
