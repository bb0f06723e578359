"""What guards find, in whole texts and in streams: the PII detectors and their checksums, the
windows streams hold back, and a stream's redaction always equal to the whole text's, however the
text is cut."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mooltiproxy.guardrails.guard import Guard, GuardBlocked
from mooltiproxy.guardrails.pii import DETECTORS, iban, luhn
from mooltiproxy.guardrails.rules import PatternError, Rule, compile_pattern, longest_match, within
from mooltiproxy.guardrails.scan import StreamScan, findings, masked
from mooltiproxy.guardrails.stream import StreamScreen
from mooltiproxy.guardrails.views import PIVOT_VIEW

RULES = [make() for make in DETECTORS.values()]
MASK = "[REDACTED:{rule}]"


def found(text: str) -> list[tuple[str, str]]:
    return [(text[match.start : match.end], match.rule) for match in findings(RULES, text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to bob.smith+tag@mail.example.co.uk now", [("bob.smith+tag@mail.example.co.uk", "email")]),
        ("call +33 6 12 34 56 78 or (555) 123-4567", [("+33 6 12 34 56 78", "phone"), ("(555) 123-4567", "phone")]),
        ("on 2024-01-15 at 12:30:45, room 1234", []),  # dates, times and short numbers are no phones
        ("card 4111 1111 1111 1111 and 4111-1111-1111-1112", [("4111 1111 1111 1111", "payment_card")]),  # Luhn
        ("IBAN GB82 WEST 1234 5698 7654 32, not GB82WEST12345698765433", [("GB82 WEST 1234 5698 7654 32", "iban")]),
        ("from 10.0.0.254 but not 999.1.1.1", [("10.0.0.254", "ipv4")]),
        ("from 2001:db8::8a2e:370:7334 at 12:30", [("2001:db8::8a2e:370:7334", "ipv6")]),
        ("key sk-ant-api03-abcdefghijklmnopqrstu and sk-short", [("sk-ant-api03-abcdefghijklmnopqrstu", "api_key")]),
        ("id AKIAIOSFODNN7EXAMPLE", [("AKIAIOSFODNN7EXAMPLE", "aws_access_key")]),
        ("token ghp_" + "a1" * 18 + " ok", [("ghp_" + "a1" * 18, "github_token")]),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
            [("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "private_key")],
        ),
    ],
)
def test_detectors_find_what_they_name_and_their_checksums_hold(text, expected):
    assert found(text) == expected


def test_checksums():
    assert luhn("4539 1488 0343 6467") and not luhn("4539 1488 0343 6468")
    assert iban("DE89 3704 0044 0532 0130 00") and not iban("DE89 3704 0044 0532 0130 01")


def test_a_patterns_longest_match_is_its_window_and_unbounded_ones_have_none():
    assert longest_match(r"project\s{1,3}nightingale") == 21
    assert longest_match(r"\bsecret\b") == 6
    assert longest_match(r"\w+") is None
    assert longest_match(r"\p{Greek}+") is None  # RE2 syntax Python does not read


@pytest.mark.parametrize("pattern", [r"(\w+)\1", r"a(?=b)", r"(?<!a)b", r"((a{100}){100}){100}"])
def test_re2_refuses_what_it_cannot_run_in_linear_time(pattern):
    with pytest.raises(PatternError):
        compile_pattern(pattern)


def streamed(rules: list[Rule], pieces: list[str]) -> tuple[str, int]:
    """The pieces through a stream scan, masked; and the most it ever held back."""
    scan, out, held = StreamScan(rules), [], 0
    for piece in pieces:
        decided, matches = scan.feed(piece)
        out.append(masked(decided, matches, MASK))
        held = max(held, scan.held)
    rest, matches = scan.flush()
    return "".join(out) + masked(rest, matches, MASK), held


WORDS = st.sampled_from(
    ["hello", " ", "\n", "bob@example.com", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "10.1.2.3", ",", "."]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(WORDS, max_size=12), st.lists(st.integers(1, 9), min_size=1, max_size=60))
def test_a_streamed_redaction_is_the_whole_texts_however_the_text_is_cut(words, cuts):
    # Items as prose separates them. (In one run of digits and spaces longer than a detector's
    # window, a stream may cut matches where the whole text does not.)
    text = " then ".join(words)
    pieces, position = [], 0
    for cut in cuts * (len(text) // max(sum(cuts), 1) + 1):
        if position >= len(text):
            break
        pieces.append(text[position : position + cut])
        position += cut
    whole = masked(text, findings(RULES, text), MASK)
    result, _ = streamed(RULES, pieces)
    assert result == whole


def test_a_stream_holds_back_no_more_than_its_window():
    rule = Rule("codename", compile_pattern("nightingale"), within(11))
    text = "a long text without the word, " * 20
    result, held = streamed([rule], list(text))
    assert result == text and held <= 12  # the window and one more, for a boundary after a match


def guard(name: str, action: str = "redact", detect: tuple[str, ...] = ("email",)) -> Guard:
    return Guard(name, "pii", False, True, action, False, "no", MASK, tuple(DETECTORS[d]() for d in detect))


def chunk(delta: dict, finish_reason: str | None = None) -> dict:
    return {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def run(screen: StreamScreen, chunks: list[dict]) -> list[dict]:
    out = [piece for each in chunks for piece in screen.chunk(each)]
    return out + screen.end()


def test_held_reasoning_is_let_go_before_the_content_that_follows_it():
    hits: list[tuple[str, str]] = []
    screen = StreamScreen(PIVOT_VIEW, [guard("pii")], lambda g, rule: hits.append((g.name, rule)))
    out = run(
        screen,
        [
            chunk({"reasoning_content": "mail bob"}),
            chunk({"reasoning_content": "@example.com"}),
            chunk({"content": "Done"}),
            chunk({}, "stop"),
        ],
    )
    fields = [(key, value) for piece in out for key, value in piece["choices"][0]["delta"].items()]
    assert fields == [
        ("reasoning_content", "mail "),
        ("reasoning_content", "[REDACTED:email]"),
        ("content", "Done"),
    ]
    assert out[-1]["choices"][0]["finish_reason"] == "stop" and hits == [("pii", "email")]


def test_tool_call_arguments_are_screened_per_call():
    screen = StreamScreen(PIVOT_VIEW, [guard("pii")], lambda g, rule: None)
    opening = {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "send", "arguments": ""}}]}
    arguments = {"tool_calls": [{"index": 0, "function": {"arguments": '{"to": "bob@example.com"}'}}]}
    out = run(screen, [chunk(opening), chunk(arguments), chunk({}, "tool_calls")])
    sent = "".join(
        call["function"].get("arguments", "")
        for piece in out
        for call in piece["choices"][0]["delta"].get("tool_calls", [])
    )
    assert sent == '{"to": "[REDACTED:email]"}'


def test_a_block_in_a_stream_raises_the_guards_error():
    screen = StreamScreen(PIVOT_VIEW, [guard("pii", action="block")], lambda g, rule: None)
    with pytest.raises(GuardBlocked) as blocked:
        run(screen, [chunk({"content": "bob@example.com is"}), chunk({}, "stop")])
    assert blocked.value.code == "guard_blocked" and "'pii'" in blocked.value.message


def test_a_chunk_whose_text_changed_loses_its_logprobs_which_would_tell_the_text():
    screen = StreamScreen(PIVOT_VIEW, [guard("pii")], lambda g, rule: None)
    logprobs = {"content": [{"token": "bob", "logprob": -0.1}]}
    held, kept = chunk({"content": "mail bob"}), chunk({"content": "."})
    held["choices"][0]["logprobs"] = logprobs
    kept["choices"][0]["logprobs"] = logprobs
    out = run(screen, [held, chunk({"content": "@example.com"}), kept, chunk({}, "stop")])
    assert out[0]["choices"][0]["delta"] == {"content": "mail "} and out[0]["choices"][0]["logprobs"] is None
    assert "".join(piece["choices"][0]["delta"].get("content", "") for piece in out) == "mail [REDACTED:email]."
