"""TGI's tool grammar as the proxy builds it: a schema TGI's router takes, which the model's answer
follows and the parser reads back."""

from __future__ import annotations

import json

import jsonschema
import pytest

from conftest import WEATHER, grammar_no_tool


def test_the_tool_grammar_is_one_tgi_takes_with_pydantic_references_resolved():
    from mooltiproxy.backends.tgi.grammar import tool_grammar
    from mooltiproxy.parsers.tools.grammar import read_tool_answer

    from support.fake_tgi import _validate_grammar

    nested = {
        "type": "function",
        "function": {
            "name": "plan",
            "parameters": {
                "type": "object",
                "properties": {"step": {"$ref": "#/$defs/Step"}},
                "required": ["step"],
                "$defs": {"Step": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
            },
        },
    }
    grammar = tool_grammar([WEATHER, nested], "auto")
    _validate_grammar(grammar)  # TGI's rules: the meta-schema, and `properties` at the root
    schema = grammar["value"]
    answer = {"function": {"_name": "plan", "step": {"n": 2}}}
    jsonschema.validate(answer, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"function": {"_name": "plan", "step": {"n": "two"}}}, schema)
    assert read_tool_answer(json.dumps(answer)) == ("plan", {"step": {"n": 2}})
    assert read_tool_answer(grammar_no_tool("Hi")) == "Hi"
    assert read_tool_answer('{"function": {"_name": "plan"') is None  # cut short: it stays text
