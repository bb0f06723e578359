"""Operations: metrics, reload, graceful shutdown, retries and fallbacks, model listing and routing,
request ids and JSON logs, the context window."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid

import httpx
import openai
import pytest
import yaml
from openai import OpenAI

from conftest import KEY, auth, proxy_config, run_cli, wait_for_log
from support.fake_tgi import MODEL_ID
from support.routes import TRANSLATED

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def client(proxy, **headers) -> OpenAI:
    return OpenAI(
        base_url=f"{proxy.url}/v1",
        api_key=KEY,
        max_retries=0,
        default_headers=headers or None,
        _strict_response_validation=True,
    )


@pytest.fixture
def proxy(start_proxy, fake_tgi):
    config = proxy_config(
        {
            "tgi": {"url": fake_tgi.url, "mapping": {**TRANSLATED, "/generate": None}},
            "down": {"url": "http://127.0.0.1:9", "mapping": {"/generate": None}},
        }
    )
    return start_proxy(config)


def metrics(proxy) -> str:
    answer = httpx.get(f"{proxy.url}/_proxy/metrics", headers=auth())
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def test_metrics(proxy, fake_tgi):
    client(proxy).chat.completions.create(**CHAT)
    httpx.post(f"{proxy.url}/generate", json={"inputs": "x"}, headers={**auth(), "target": "down"})
    httpx.get(f"{proxy.url}/generate", headers=auth("wrong"))
    assert httpx.get(f"{proxy.url}/_proxy/metrics").status_code == 401
    text = metrics(proxy)
    assert 'mooltiproxy_requests_total{target="tgi",route="/chat/completions",status="200"} 1' in text
    assert 'mooltiproxy_upstream_errors_total{target="down",kind="upstream_unreachable"} 1' in text
    assert 'mooltiproxy_generated_tokens_total{target="tgi"} 12' in text
    assert 'mooltiproxy_request_duration_seconds_count{target="tgi",route="/chat/completions"} 1' in text
    assert 'mooltiproxy_upstream_duration_seconds_bucket{target="tgi",le="+Inf"} 1' in text
    assert "mooltiproxy_strikes_total 1" in text  # the wrong key; metrics asked without one guessed nothing
    assert "mooltiproxy_banned_addresses 0" in text
    assert "# TYPE mooltiproxy_active_streams gauge" in text


def test_public_metrics(start_proxy, fake_tgi):
    proxy = start_proxy(
        proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}}, system={"metrics_public": True})
    )
    assert "mooltiproxy_requests_total" in httpx.get(f"{proxy.url}/_proxy/metrics").text


def test_request_ids_and_json_logs(start_proxy, fake_tgi):
    config = proxy_config({"tgi": {"url": fake_tgi.url, "mapping": TRANSLATED}}, system={"log_format": "json"})
    proxy = start_proxy(config)
    answer = httpx.post(f"{proxy.url}/chat/completions", json=CHAT, headers={**auth(), "X-Request-ID": "req-42"})
    assert answer.headers["x-request-id"] == "req-42"
    assert answer.headers["x-mooltiproxy-target"] == "tgi"
    assert fake_tgi.last.headers["X-Request-ID"] == "req-42"
    generated = httpx.post(f"{proxy.url}/chat/completions", json=CHAT, headers=auth()).headers["x-request-id"]
    assert len(generated) == 24 and int(generated, 16)
    wait_for_log(proxy, '"request_id": "req-42"')
    lines = [json.loads(line) for line in proxy.log().splitlines()]
    access = next(line for line in lines if line.get("request_id") == "req-42")
    assert access["client"] == "master"
    assert access["target"] == "tgi"
    assert access["route"] == "/chat/completions"
    assert access["status"] == 200
    assert access["completion_tokens"] == 12
    assert access["prompt_tokens"] > 0
    assert access["upstream_ms"] > 0


def test_context_window(start_proxy, fake_tgi):
    endpoint = {**TRANSLATED["/chat/completions"], "defaults": {"max_new_tokens": 5000}}
    proxy = start_proxy(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/chat/completions": endpoint}}}))
    long_prompt = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(openai.BadRequestError) as refused:
        client(proxy).chat.completions.create(model="m", messages=long_prompt, max_tokens=10)
    assert refused.value.body["code"] == "context_length_exceeded"
    assert "maximum context length is 4096 tokens" in refused.value.body["message"]
    # A max_tokens larger than the room the prompt leaves, asked or the endpoint's default, is
    # clamped to what fits.
    asked = client(proxy).chat.completions.create(**CHAT, max_tokens=5000)
    assert asked.choices[0].message.content
    answer = client(proxy).chat.completions.create(**CHAT)
    assert answer.choices[0].message.content
    first, second = fake_tgi.received[-2:]
    prompt_tokens = 4096 - second.json()["parameters"]["max_new_tokens"]
    assert first.json()["parameters"]["max_new_tokens"] == 5000
    assert prompt_tokens == answer.usage.prompt_tokens
    streamed = client(proxy).chat.completions.create(**CHAT, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)


def test_model_listing(start_proxy, fake_tgi):
    config = proxy_config(
        {
            "tgi": {"url": fake_tgi.url, "mapping": TRANSLATED},
            "named": {"url": fake_tgi.url, "models": ["alpha", "beta"], "mapping": TRANSLATED},
            "header-only": {"url": fake_tgi.url, "mapping": TRANSLATED},  # reached by the target header
        }
    )
    proxy = start_proxy(config)
    models = client(proxy).models.list()
    assert [(model.id, model.owned_by) for model in models.data] == [
        (MODEL_ID, "tgi"),
        ("alpha", "named"),
        ("beta", "named"),
    ]
    # Every id listed routes to what lists it.
    for model in models.data:
        answer = httpx.post(f"{proxy.url}/v1/chat/completions", json={**CHAT, "model": model.id}, headers=auth())
        assert answer.headers["x-mooltiproxy-target"] == model.owned_by
    assert httpx.get(f"{proxy.url}/models", headers=auth()).json()["object"] == "list"


def test_routing_by_model_name(start_proxy, fake_tgi, echo):
    config = proxy_config(
        {
            "tgi": {"url": fake_tgi.url, "mapping": TRANSLATED},
            "echo": {"url": echo.url, "models": ["echo-model"], "mapping": {"/chat/completions": "/echo"}},
        }
    )
    proxy = start_proxy(config)
    by_model = httpx.post(f"{proxy.url}/v1/chat/completions", json={**CHAT, "model": "echo-model"}, headers=auth())
    assert by_model.headers["x-mooltiproxy-target"] == "echo"
    assert echo.last.path == "/echo"
    other = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=auth())
    assert other.headers["x-mooltiproxy-target"] == "tgi"
    header_wins = httpx.post(
        f"{proxy.url}/v1/chat/completions", json={**CHAT, "model": "echo-model"}, headers={**auth(), "target": "tgi"}
    )
    assert header_wins.headers["x-mooltiproxy-target"] == "tgi"


def test_check_refuses_a_model_claimed_twice(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "targets": {
                    "default": "a",
                    "a": {"url": "http://127.0.0.1:1", "models": ["m"], "mapping": {"/x": None}},
                    "b": {"url": "http://127.0.0.1:2", "models": ["m"], "fallback": ["b"], "mapping": {"/x": None}},
                }
            }
        )
    )
    result = run_cli("--config", str(path), "--check")
    assert result.returncode == 1
    assert "targets.b.models: model 'm' is claimed by a too" in result.stderr
    assert "targets.b.fallback: a target cannot fall back on itself" in result.stderr


def test_retries_on_503_then_success(start_proxy, echo):
    key = uuid.uuid4().hex
    config = proxy_config({"echo": {"url": echo.url, "retries": 2, "mapping": {f"/flaky/{key}": None}}})
    proxy = start_proxy(config)
    answer = httpx.get(f"{proxy.url}/flaky/{key}?failures=2", headers=auth())
    assert answer.status_code == 200
    assert answer.json() == {"calls": 3}


def test_balanced_urls_and_ejection(start_proxy, fake_tgi, echo):
    config = proxy_config(
        {"pair": {"urls": ["http://127.0.0.1:9", fake_tgi.url, echo.url], "retries": 1, "mapping": {"/health": None}}}
    )
    proxy = start_proxy(config)
    for _ in range(4):
        assert httpx.get(f"{proxy.url}/health", headers=auth()).status_code == 200
    assert any(call.path == "/health" for call in fake_tgi.received)
    assert any(call.path == "/health" for call in echo.received)
    # The refused URL was tried once, then left aside.
    assert proxy.log().count("cannot connect to target pair") == 1
    assert "cannot connect to target pair at 127.0.0.1:9: Connection refused" in proxy.log()  # what was tried, and why


def test_fallback_and_client_limits(start_proxy, fake_tgi):
    config = proxy_config(
        {
            "primary": {"url": "http://127.0.0.1:9", "fallback": ["backup"], "mapping": TRANSLATED},
            "backup": {"url": fake_tgi.url, "mapping": TRANSLATED},
        },
        clients={"limited": {"envkey": "LIMITED_KEY", "targets": ["primary"]}},
    )
    proxy = start_proxy(config, env={"LIMITED_KEY": "limited-key-0123456789abcdef"})
    answer = client(proxy).chat.completions.with_raw_response.create(**CHAT)
    assert answer.headers["x-mooltiproxy-target"] == "backup"
    assert answer.parse().choices[0].message.content == fake_tgi.reply
    wait_for_log(proxy, "falling back on backup")
    limited = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=auth("limited-key-0123456789abcdef"))
    assert limited.status_code == 502


def test_graceful_shutdown_lets_a_stream_finish(start_proxy, fake_tgi):
    proxy = start_proxy(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": TRANSLATED}}))
    fake_tgi.reply = "one two three four five six seven eight"
    fake_tgi.token_delay = 0.15
    with httpx.stream(
        "POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth()
    ) as answer:
        lines = answer.iter_lines()
        assert next(lines).startswith("data: ")
        proxy.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no new connections once stopping
            httpx.get(f"{proxy.url}/_proxy/health")
        rest = list(lines)
    assert rest[-2:] == ["data: [DONE]", ""] or rest[-1] == "data: [DONE]"
    assert proxy.process.wait(10) == 0


def test_reload(start_proxy, fake_tgi, echo):
    config = proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}})
    proxy = start_proxy(config)
    assert httpx.get(f"{proxy.url}/health", headers=auth()).status_code == 404
    # An invalid config is logged and the running one stays.
    proxy.config_path.write_text("targets: [broken")
    proxy.process.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    wait_for_log(proxy, "reload refused")
    assert httpx.get(f"{proxy.url}/info", headers=auth()).status_code == 200
    # A valid one is swapped in; what needs a restart is said and kept as it runs.
    config["targets"]["tgi"]["mapping"]["/health"] = None
    config["system"]["max_body_size"] = 10
    config["system"]["client_timeout"] = 5
    proxy.config_path.write_text(yaml.safe_dump(config))
    proxy.process.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    wait_for_log(proxy, "config reloaded")
    wait_for_log(proxy, "system.client_timeout changes only with a restart")
    assert httpx.get(f"{proxy.url}/health", headers=auth()).status_code == 200
    assert httpx.post(f"{proxy.url}/info", content=b"x" * 100, headers=auth()).status_code == 413


def test_reload_under_load_loses_no_request(start_proxy, fake_tgi):
    config = proxy_config({"tgi": {"url": fake_tgi.url, "mapping": TRANSLATED}})
    proxy = start_proxy(config)
    fake_tgi.token_delay = 0.02
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(headers=auth(), timeout=10) as session:
            while not stop.is_set():
                body = {**CHAT, "stream": len(statuses) % 2 == 0}
                statuses.append(session.post(f"{proxy.url}/v1/chat/completions", json=body).status_code)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    for index in range(5):
        time.sleep(0.3)
        config["targets"]["tgi"]["max_connections"] = 100 + index  # a new session each time
        proxy.config_path.write_text(yaml.safe_dump(config))
        proxy.process.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    stop.set()
    for worker in workers:
        worker.join()
    assert proxy.log().count("config reloaded") == 5
    assert len(statuses) > 20
    assert set(statuses) == {200}


def test_reload_refuses_a_config_that_breaks_the_loader(start_proxy, fake_tgi):
    config = proxy_config({"tgi": {"url": fake_tgi.url, "mapping": {"/info": None}}})
    proxy = start_proxy(config)
    laughs = "".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9) if n else 'lol'}]\n" for n in range(9))
    proxy.config_path.write_text(laughs + yaml.safe_dump(config))
    proxy.process.send_signal(signal.SIGHUP)
    log = wait_for_log(proxy, "reload refused")
    assert f"{proxy.config_path}:6: l5." in log and "the document expands to more than 100,000 values" in log
    assert httpx.get(f"{proxy.url}/info", headers=auth()).status_code == 200


def test_a_client_limited_to_some_targets_lists_their_models(start_proxy, fake_tgi):
    config = proxy_config(
        {
            "tgi": {"url": fake_tgi.url, "mapping": TRANSLATED},
            "named": {"url": fake_tgi.url, "models": ["alpha", "beta"], "mapping": TRANSLATED},
        },
        default="tgi",
        clients={"alice": {"envkey": "ALICE_KEY", "targets": ["named"]}},
    )
    alice = "alice-key-0123456789abcdefghij"
    proxy = start_proxy(config, env={"ALICE_KEY": alice})
    models = OpenAI(base_url=f"{proxy.url}/v1", api_key=alice).models.list()
    assert [(model.id, model.owned_by) for model in models.data] == [("alpha", "named"), ("beta", "named")]
    # The default target itself stays out of alice's reach.
    assert httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=auth(alice)).status_code == 403


def test_at_start_each_target_says_its_model_and_context(start_proxy, fake_tgi, fake_vllm):
    targets = {
        "tgi": {"url": fake_tgi.url, "mapping": {"/generate": None}},
        "vllm": {"url": fake_vllm.url, "mapping": {"/v1/chat/completions": None}},
        "pinned": {"url": fake_tgi.url, "context_length": 8192, "mapping": {"/generate": None}},
        "down": {"url": "http://127.0.0.1:9", "mapping": {"/generate": None}},
    }
    log = start_proxy(proxy_config(targets, default="tgi")).log()
    assert "target tgi: model fake-org/fake-llama-7b-chat, context 4096 tokens (from /info)" in log
    assert "target vllm: model fake-org/fake-llama-7b-chat, context 4096 tokens (from /v1/models)" in log
    assert "target pinned: model fake-org/fake-llama-7b-chat, context 8192 tokens (from the config)" in log
    assert "target down: unreachable at start" in log


def test_ready_says_whether_the_default_target_answers(start_proxy, fake_tgi, echo):
    targets = {
        "tgi": {"url": fake_tgi.url, "mapping": {"/generate": None}},
        "plain": {"url": echo.url, "mapping": {"/echo": None}},  # answers, but says nothing of a model
        "down": {"url": "http://127.0.0.1:9", "mapping": {"/generate": None}},
    }
    up = start_proxy(proxy_config(targets, default="tgi"))
    assert "target plain: reachable; its model and limits unknown" in up.log()
    plain = httpx.get(f"{up.url}/_proxy/ready")  # no key: the verdict only
    assert (plain.status_code, plain.json()) == (200, {"status": "ready"})
    detailed = httpx.get(f"{up.url}/_proxy/ready", headers=auth()).json()
    assert detailed["targets"]["tgi"] == {
        "reachable": True,
        "model": MODEL_ID,
        "context_length": 4096,
        "default": True,
    }
    assert (detailed["targets"]["plain"]["reachable"], detailed["targets"]["down"]["reachable"]) == (True, False)
    # The health check says the process runs; readiness, that it can serve.
    down = start_proxy(proxy_config(targets, default="down"))
    assert httpx.get(f"{down.url}/_proxy/health").status_code == 200
    refused = httpx.get(f"{down.url}/_proxy/ready")
    assert (refused.status_code, refused.json()) == (503, {"status": "not ready"})


def test_a_prompt_format_of_another_family_is_said_at_start(start_proxy, fake_tgi):
    fake_tgi.model_id = "Qwen/Qwen2.5-7B-Instruct"
    route = {"path": "/generate", "in": "chatReqOpenAItoTGI", "out": "chatAnsTGItoOpenAI"}
    mapping = {
        "/llama2/chat/completions": {**route, "prompter": "llama2_chat"},
        "/chatml/chat/completions": {**route, "prompter": "chat_template", "template": "chatml"},
    }
    log = start_proxy(proxy_config({"tgi": {"url": fake_tgi.url, "mapping": mapping}})).log()
    assert (
        "targets.tgi.mapping./llama2/chat/completions: the target serves Qwen/Qwen2.5-7B-Instruct "
        "(ChatML (Qwen, Hermes)), whose prompts hold <|im_start|>, but this route's prompt format "
        "(llama2_chat) does not"
    ) in log
    assert "mapping./chatml/chat/completions: the target serves" not in log


def test_the_route_table_online_and_offline(start_proxy, fake_tgi, tmp_path):
    mapping = {"/generate": None, "/chat/completions": {**TRANSLATED["/chat/completions"]}}
    config = proxy_config({"tgi": {"url": fake_tgi.url, "mapping": mapping}})
    proxy = start_proxy(config)
    assert httpx.get(f"{proxy.url}/_proxy/routes").status_code == 401
    routes = {row["path"]: row for row in httpx.get(f"{proxy.url}/_proxy/routes", headers=auth()).json()["routes"]}
    assert routes["/generate"]["in"] is None and routes["/generate"]["target"] == "tgi"
    chat = routes["/chat/completions"]
    assert (chat["upstream"], chat["in"], chat["out"]) == ("/generate", "chatReqOpenAItoTGI", "chatAnsTGItoOpenAI")
    assert chat["prompter"] == TRANSLATED["/chat/completions"]["prompter"]
    printed = run_cli("--config", str(proxy.config_path), "--check", "--routes", env={"MOOLTIPROXY_KEY": KEY})
    assert (
        "/chat/completions -> tgi (default) /generate: in chatReqOpenAItoTGI; out chatAnsTGItoOpenAI" in printed.stdout
    )
    assert "/generate -> tgi (default) /generate: passed through" in printed.stdout


def test_ready_follows_the_default_target_without_waiting_for_it(start_proxy):
    from support.scripted_upstream import ScriptedUpstream

    target = ScriptedUpstream().start()  # answers 404 to everything: reachable
    proxy = start_proxy(proxy_config({"t": {"url": target.url, "mapping": {"/x": None}}}))
    assert httpx.get(f"{proxy.url}/_proxy/ready").status_code == 200
    target.stop()
    deadline = time.monotonic() + 15
    while (answer := httpx.get(f"{proxy.url}/_proxy/ready", timeout=1)).status_code == 200:
        assert time.monotonic() < deadline, "ready still says the target answers"
        time.sleep(0.5)
    assert answer.json() == {"status": "not ready"}
