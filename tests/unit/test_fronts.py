"""The fronts, dict in and bytes out: their error bodies, model lists, probes and key headers, and
the registry the engine reads them from."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from mooltiproxy.config.settings import MASTER, ClientKey, SystemSettings
from mooltiproxy.core.errors import ContextLengthExceeded, ProxyError
from mooltiproxy.forwarding.models import ListedModel
from mooltiproxy.fronts import FRONTS
from mooltiproxy.fronts.anthropic import MessagesFront
from mooltiproxy.fronts.base import Front, FrontServices
from mooltiproxy.fronts.openai import ChatCompletionsFront
from mooltiproxy.fronts.responses import ResponsesFront
from mooltiproxy.serving.own_routes import OwnRoute, OwnRoutes
from mooltiproxy.state.memory import MemoryStore
from mooltiproxy.translation.kinds import PIVOT

SERVICES = FrontServices(MemoryStore(), SystemSettings())
MODELS = {"qwen": ListedModel("tgi", 32768), "llama": ListedModel("vllm", None)}


def test_every_front_has_its_own_kind_and_the_pivot_has_one():
    kinds = [front.kind for front in FRONTS]
    assert len(kinds) == len(set(kinds)) and PIVOT in kinds


def test_the_pivots_front_writes_openais_error_and_model_list():
    front = ChatCompletionsFront(SERVICES)
    error = ProxyError(429, "Slow down", code="rate_limit_exceeded")
    assert json.loads(front.error_body(error, "req-1")) == {
        "error": {"message": "Slow down", "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}
    }
    assert front.model_list(MODELS) == {
        "object": "list",
        "data": [
            {"id": "qwen", "object": "model", "created": 0, "owned_by": "tgi"},
            {"id": "llama", "object": "model", "created": 0, "owned_by": "vllm"},
        ],
    }
    assert not front.claims_listing({"anthropic-version": "2023-06-01"}, {})


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (ProxyError(401, "Invalid API key"), "authentication_error", "Invalid API key"),
        (ProxyError(503, "Busy"), "overloaded_error", "Busy"),
        (ProxyError(502, "Target down"), "api_error", "Target down"),
        # Anthropic's own words, on which Claude Code compacts its conversation.
        (
            ContextLengthExceeded(8192, 9000, 100),
            "invalid_request_error",
            "prompt is too long: 9000 tokens > 8192 maximum",
        ),
    ],
)
def test_anthropics_front_writes_anthropics_errors(error, kind, message):
    body = json.loads(MessagesFront(SERVICES).error_body(error, "req-1"))
    assert body == {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req-1"}


def test_anthropics_front_lists_models_for_its_clients_and_takes_their_key_header():
    front = MessagesFront(SERVICES)
    assert front.claims_listing({"anthropic-version": "2023-06-01"}, {})
    assert front.model_list(MODELS) == {
        "data": [
            {"type": "model", "id": "qwen", "display_name": "qwen", "created_at": "1970-01-01T00:00:00Z"},
            {"type": "model", "id": "llama", "display_name": "llama", "created_at": "1970-01-01T00:00:00Z"},
        ],
        "has_more": False,
        "first_id": "qwen",
        "last_id": "llama",
    }
    assert front.key_headers == ("x-api-key",)
    assert front.probes == {"/", "/api/hello"}


def test_the_responses_front_answers_its_stored_responses_route():
    (route,) = ResponsesFront(SERVICES).own_routes()
    assert route.methods == {"GET", "DELETE"}
    assert route.pattern.fullmatch("/v1/responses/resp_abc123").group(1) == "resp_abc123"
    assert route.pattern.fullmatch("/responses/resp_abc123")
    assert not route.pattern.fullmatch("/v1/responses/resp_abc123/input_items")
    assert not route.pattern.fullmatch("/v1/responses")


def test_a_front_without_overrides_is_the_pivots():
    class Quiet(Front):
        kind = "quiet"

    front = Quiet(SERVICES)
    assert front.own_routes() == () and front.key_headers == () and not front.probes


def test_own_routes_answer_in_order_and_say_which_methods_they_take():
    calls = []

    async def answer(request, found, client):
        calls.append((request.method, found.group(1), client.name))
        return web.Response(text="ok")

    routes = [
        OwnRoute(re.compile("/kept/(.+)"), answer, frozenset({"GET"})),
        OwnRoute(re.compile("/admin/(.*)"), answer, master_only=True),
    ]
    alice = ClientKey("alice", b"")
    master = ClientKey(MASTER, b"")

    def ask(method, path, client):
        return asyncio.run(OwnRoutes(routes).answer(make_mocked_request(method, path), path, client))

    assert ask("GET", "/kept/a", alice).status == 200 and calls[-1] == ("GET", "a", "alice")
    with pytest.raises(ProxyError) as wrong_method:
        ask("POST", "/kept/a", alice)
    assert (wrong_method.value.status, wrong_method.value.headers) == (405, {"Allow": "GET"})
    with pytest.raises(ProxyError) as not_master:
        ask("DELETE", "/admin/x", alice)
    assert not_master.value.status == 403
    assert ask("DELETE", "/admin/x", master).status == 200
    assert ask("GET", "/elsewhere", master) is None
    assert ask("GET", "/kept/a\n", alice) is None  # the whole path must match


# ModelInfo's fields that codex-rs/protocol/src/openai_models.rs requires (no serde default): a
# catalog entry without one of them fails Codex's start with "missing field".
CODEX_REQUIRED = {
    "slug",
    "display_name",
    "supported_reasoning_levels",
    "shell_type",
    "visibility",
    "supported_in_api",
    "priority",
    "base_instructions",
    "supports_reasoning_summaries",
    "support_verbosity",
    "truncation_policy",
    "supports_parallel_tool_calls",
    "experimental_supported_tools",
}


def test_codex_gets_its_own_catalog_with_each_targets_context_window():
    front = ResponsesFront(SERVICES)
    assert front.claims_listing({}, {"client_version": "0.64.0"})
    assert front.claims_listing({"originator": "codex_cli_rs"}, {})
    assert not front.claims_listing({"user-agent": "OpenAI/Python"}, {})
    catalog = front.model_list(MODELS)
    qwen, llama = catalog["models"]
    assert CODEX_REQUIRED <= set(qwen) and CODEX_REQUIRED <= set(llama)
    assert (qwen["slug"], qwen["context_window"], qwen["priority"]) == ("qwen", 32768, 0)
    assert "context_window" not in llama  # unknown: Codex keeps its own default
    assert qwen["shell_type"] == "shell_command" and qwen["truncation_policy"] == {"mode": "tokens", "limit": 10000}
