"""The reasoning parsers against vLLM's own test cases (tests/data/reasoning-parser-cases.json),
whole and streamed cut in several ways; a stream always reads as the whole answer; the start
state comes from real templates' rendered prompts."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mooltiproxy.config.templates import compile_template
from mooltiproxy.parsers.reasoning import REASONING_PARSERS, detect

from support import DATA
from support.fake_tgi import tokenize

CORPUS = json.loads((DATA / "reasoning-parser-cases.json").read_text())
CASES = CORPUS["cases"]
TEMPLATES = DATA / "reasoning-templates"


def streamed(parser: str, inside: bool, pieces: list[str]) -> tuple[str | None, str]:
    stream = REASONING_PARSERS[parser].stream(inside)
    reasoning = content = ""
    for piece in pieces:
        more_reasoning, more_content = stream.feed(piece)
        reasoning, content = reasoning + more_reasoning, content + more_content
    more_reasoning, more_content = stream.flush()
    return (reasoning + more_reasoning) or None, content + more_content


def cuts(output: str) -> dict[str, list[str]]:
    return {
        "tokens": tokenize(output),
        "characters": list(output),
        **{f"chunks of {size}": [output[i : i + size] for i in range(0, len(output), size)] for size in (3, 7)},
    }


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_whole_and_streamed(case):
    parser, inside = REASONING_PARSERS[case["parser"]], case["starts_inside"]
    assert parser.parse(case["output"], inside) == (case["reasoning"], case["content"]), case["source"]
    for way, pieces in cuts(case["output"]).items():
        assert streamed(case["parser"], inside, pieces) == (case["reasoning"], case["content"]), way


def test_every_parser_has_cases_from_its_peers_and_every_difference_says_why():
    assert {case["parser"] for case in CASES} == set(REASONING_PARSERS)
    assert all(case["source"] for case in CASES)
    assert all(case["difference"] for case in CASES if "vllm" in case)


WORDS = st.sampled_from(
    ["<think>", "</think>", "<tool_call>", "\n", " ", "\n\n", "plan", "answer", "<", "</", "think>"]
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    parser=st.sampled_from(sorted(REASONING_PARSERS)),
    inside=st.booleans(),
    words=st.lists(WORDS, max_size=16),
    bounds=st.lists(st.integers(0, 120), max_size=8),
)
def test_a_stream_reads_as_the_whole_answer_however_it_is_cut(parser, inside, words, bounds):
    output = "".join(words)
    points = [0, *sorted({point for point in bounds if point < len(output)}), len(output)]
    pieces = [output[start:end] for start, end in zip(points, points[1:], strict=False)]
    assert streamed(parser, inside, pieces) == REASONING_PARSERS[parser].parse(output, inside)


def render(template: str, **variables: object) -> str:
    compiled = compile_template((TEMPLATES / template).read_text())
    return compiled.render(messages=[{"role": "user", "content": "2+2?"}], add_generation_prompt=True, **variables)


def test_the_start_state_comes_from_the_rendered_prompts_tail():
    deepseek = REASONING_PARSERS["deepseek_r1"]
    assert deepseek.starts_inside(render("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", bos_token=""))
    qwen3 = REASONING_PARSERS["qwen3"]
    thinking = render("Qwen-Qwen3-0.6B.jinja")
    assert not qwen3.starts_inside(thinking)  # Qwen3 opens <think> itself
    assert qwen3.parse("<think>\nadd\n</think>\n\n4", qwen3.starts_inside(thinking)) == ("add", "4")
    # Thinking off: the template closed an empty <think></think>, so the answer is all content
    # (vLLM #53284 sent it into the reasoning).
    off = render("Qwen-Qwen3-0.6B.jinja", enable_thinking=False)
    assert off.endswith("<think>\n\n</think>\n\n") and not qwen3.starts_inside(off)
    assert qwen3.parse("4", qwen3.starts_inside(off)) == (None, "4")


def test_auto_picks_the_parser_of_the_templates_markers():
    assert detect((TEMPLATES / "openai-gpt-oss-120b.jinja").read_text()) == "gpt_oss"
    assert detect((TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text()) == "qwen3"
    assert detect((TEMPLATES / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja").read_text()) == "deepseek_r1"
    assert detect((DATA / "tool-templates" / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text()) is None
