"""Routes and a client several test modules use."""

from __future__ import annotations

from openai import OpenAI

from conftest import KEY

LLAMA2_PROMPT = (
    "[INST] <<SYS>>\nYou are Bob.\n<</SYS>>\n\nHello [/INST] Hi! How can I help? </s><s>[INST] Tell me a joke [/INST]"
)
TRANSLATED = {
    "/completions": {"path": "/generate", "in": "textReqOpenAItoTGI", "out": "textAnsTGItoOpenAI"},
    "/chat/completions": {
        "path": "/generate",
        "in": "chatReqOpenAItoTGI",
        "out": "chatAnsTGItoOpenAI",
        "prompter": "llama2_chat",
    },
}


def fronts_onto_tgi(**settings: object) -> dict[str, dict]:
    """OpenAI Chat, Anthropic Messages and Responses routes, chained onto TGI's /generate."""
    chains = {
        "/chat/completions": (["chatReqOpenAItoTGI"], ["chatAnsTGItoOpenAI"]),
        "/messages": (
            ["messagesReqAnthropicToOpenAI", "chatReqOpenAItoTGI"],
            ["chatAnsTGItoOpenAI", "messagesAnsOpenAIToAnthropic"],
        ),
        "/responses": (
            ["responsesReqToOpenAI", "chatReqOpenAItoTGI"],
            ["chatAnsTGItoOpenAI", "responsesAnsOpenAIToResponses"],
        ),
    }
    return {path: {"path": "/generate", "in": ins, "out": outs, **settings} for path, (ins, outs) in chains.items()}


def client(proxy, target: str = "tgi") -> OpenAI:
    return OpenAI(
        base_url=f"{proxy.url}/v1",
        api_key=KEY,
        default_headers={"target": target},
        max_retries=0,
        _strict_response_validation=True,
    )
