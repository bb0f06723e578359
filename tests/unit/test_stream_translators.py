"""Stream translators, event in and chunks out: the base's defaults, chains of them, and the
decorators' specs."""

from __future__ import annotations

import json

from mooltiproxy.backends.tgi.mappers import chatAnsTGItoOpenAI, chatReqOpenAItoTGI
from mooltiproxy.backends.tgi.stream import TGIStreamTranslator
from mooltiproxy.config.chains import chained_translators
from mooltiproxy.config.plugin_specs import MapperSpec, StreamTranslator
from mooltiproxy.config.registry import find_mappers
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.sealing import Sealer
from mooltiproxy.fronts.anthropic import AnthropicStream, messagesAnsOpenAIToAnthropic
from mooltiproxy.translation.kinds import OPENAI_CHAT, TGI_GENERATE
from mooltiproxy.translation.sse import frame


def tgi_event(text: str, last: bool = False) -> str:
    event = {"index": 1, "token": {"id": 1, "text": text, "logprob": 0.0, "special": False}, "generated_text": None}
    if last:
        event.update(
            generated_text=text, details={"finish_reason": "eos_token", "input_length": 4, "generated_tokens": 2}
        )
    return json.dumps(event)


def test_the_base_speaks_openais_stream_end_and_errors():
    base = StreamTranslator()
    assert base.done == b"data: [DONE]\n\n" and base.ping == b": keep-alive\n\n"
    assert (base.finished, base.complete, base.usage, base.end()) == (False, False, None, [])
    frame = base.error_frame(ProxyError(502, "down", code="upstream_error"))
    assert frame.startswith(b"data: {") and json.loads(frame[6:])["error"]["message"] == "down"


def chunk_of(chunk: dict | bytes) -> dict:
    """A chunk as a dict, whether a translator gave it as one or framed already."""
    return json.loads(chunk[len(b"data: ") :]) if isinstance(chunk, bytes) else chunk


def test_tgis_events_become_openais_chunks_and_say_when_the_stream_is_done():
    translator = TGIStreamTranslator("chat", "m", stops=(), include_usage=True)
    first = [chunk_of(chunk) for chunk in translator.event(tgi_event("Hel"))]
    assert [chunk["choices"][0]["delta"] for chunk in first] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
    ]
    assert not translator.finished
    translator.event(tgi_event("lo", last=True))
    assert translator.finished and translator.complete
    assert translator.usage == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    ending = translator.end()
    assert ending[0]["choices"][0]["finish_reason"] == "stop" and ending[-1]["usage"]["total_tokens"] == 6


def test_a_last_link_frames_its_text_chunks_as_the_dicts_would_be_framed():
    framed, chained = (TGIStreamTranslator("chat", "m", stops=(), include_usage=False) for _ in range(2))
    chained.last = False
    text = 'He said "hi" \\ \n\u2028 ünï'
    for translator in (framed, chained):
        translator._created, translator._id = 1, "chatcmpl-1"
    bytes_out = framed.event(tgi_event(text))[1]
    dict_out = chained.event(tgi_event(text))[1]
    assert isinstance(bytes_out, bytes) and bytes_out == frame(dict_out)


def test_a_chain_reads_the_target_with_its_first_link_and_speaks_with_its_last():
    factory = chained_translators(
        [
            lambda endpoint, context: TGIStreamTranslator("chat", "m", (), True),
            lambda endpoint, context: AnthropicStream("m", Sealer("key", b"test")),
        ]
    )
    chain = factory(None, None)
    assert chain.done == b"" and chain.ping.startswith(b"event: ping")
    out = chain.event(tgi_event("Hi", last=True))
    assert chain.finished and chain.usage == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    assert b"message_start" in b"".join(out)
    assert chain.error_frame(ProxyError(500, "x")).startswith(b"event: error")


def test_decorated_mappers_are_frozen_specs_and_a_plain_function_declares_nothing():
    assert isinstance(chatReqOpenAItoTGI, MapperSpec)
    assert (chatReqOpenAItoTGI.takes, chatReqOpenAItoTGI.gives) == (OPENAI_CHAT, TGI_GENERATE)
    assert chatReqOpenAItoTGI.needs_prompter
    assert chatAnsTGItoOpenAI.stream_translator is not None and chatAnsTGItoOpenAI.error_hook is not None
    assert messagesAnsOpenAIToAnthropic.error_hook is None


def test_a_plugin_folders_plain_function_is_a_mapper_that_declares_nothing(tmp_path):
    (tmp_path / "mappers").mkdir()
    (tmp_path / "mappers" / "mine.py").write_text(
        "def plain(payload, endpoint):\n    return payload\n\n\ndef _helper(payload):\n    return payload\n"
    )
    found = find_mappers(tmp_path)
    spec = found["plain"]
    assert (spec.takes, spec.gives, spec.needs_prompter, spec.stream_translator) == (None, None, False, None)
    assert spec({"a": 1}, None) == {"a": 1}
    assert "_helper" not in found
    assert {"identity", "chatReqOpenAItoTGI", "messagesReqAnthropicToOpenAI"} <= set(found)
