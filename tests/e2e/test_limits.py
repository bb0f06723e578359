"""Rate limits and the state store: exact under concurrency in memory, in SQLite shared by workers,
and in a real redis-server shared by two proxy instances; and a Redis outage under load."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import httpx
import pytest
from openai import OpenAI

from conftest import auth, proxy_config, wait_for_log
from support.routes import TRANSLATED

ALICE = "alice-key-0123456789abcdefghij"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def limited_config(upstream_url: str, limits: dict, state: str | None = None, **system) -> dict:
    mapping = {**TRANSLATED, "/echo": None, "/slow": None}
    config = proxy_config(
        {"t": {"url": upstream_url, "mapping": mapping}},
        clients={"alice": {"envkey": "ALICE_KEY", "limits": limits}},
        cerbere={"max_tries": 3},
        system={**({"state": state} if state else {}), **system},
    )
    return config


def start_instances(start_proxy, config: dict, count: int = 1) -> list:
    return [start_proxy(config, env={"ALICE_KEY": ALICE}) for _ in range(count)]


async def statuses(
    urls: list[str], requests: int, headers: dict, path: str = "/echo", per_second: float = 0, at_once: int = 100
) -> list[int]:
    """`requests` GETs spread over the URLs, `at_once` of them at a time (0: all), or at `per_second`
    (aiohttp's client: the load must come faster than the limits are checked)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=at_once)) as session:

        async def one(index: int) -> int:
            if per_second:
                await asyncio.sleep(index / per_second)
            async with session.get(f"{urls[index % len(urls)]}{path}", headers=headers) as answer:
                await answer.read()
                return answer.status

        return list(await asyncio.gather(*(one(index) for index in range(requests))))


def assert_exactly_max_tries_guesses(results: list[int]) -> None:
    assert sorted(set(results)) == [401, 403]
    assert results.count(401) == 3, f"{results.count(401)} guesses were checked, not max_tries = 3"


def test_wrong_keys_are_counted_exactly_in_memory(start_proxy, echo):
    (proxy,) = start_instances(start_proxy, limited_config(echo.url, {}))
    assert_exactly_max_tries_guesses(asyncio.run(statuses([proxy.url], 1000, auth("wrong"))))


def test_wrong_keys_are_counted_exactly_across_workers(start_proxy, echo, tmp_path):
    (proxy,) = start_instances(
        start_proxy, limited_config(echo.url, {}, state=str(tmp_path / "state.sqlite"), workers=2)
    )
    assert_exactly_max_tries_guesses(asyncio.run(statuses([proxy.url], 1000, auth("wrong"))))


def test_wrong_keys_are_counted_exactly_across_instances(start_proxy, echo, redis):
    # A thousand at once, far more than the Redis pool's connections (state_connections: 16): the
    # burst waits its turn, and is never taken for an outage that would count on local state.
    config = limited_config(echo.url, {}, state=redis.url, state_connections=16)
    proxies = start_instances(start_proxy, config, count=2)
    results = asyncio.run(statuses([p.url for p in proxies], 1000, auth("wrong"), at_once=0))
    assert_exactly_max_tries_guesses(results)
    # The ban holds on both instances, whichever made it.
    assert {httpx.get(f"{p.url}/echo", headers=auth()).status_code for p in proxies} == {403}
    assert not any("serving on local state" in p.log() for p in proxies)


def test_a_ban_made_on_one_instance_holds_on_the_other_at_once(start_proxy, echo, redis):
    first, second = start_instances(start_proxy, limited_config(echo.url, {}, state=redis.url), count=2)
    assert httpx.get(f"{second.url}/echo", headers=auth()).status_code == 200
    for _ in range(3):
        assert httpx.get(f"{first.url}/echo", headers=auth("wrong")).status_code == 401
    banned_at = time.monotonic()
    while httpx.get(f"{second.url}/echo", headers=auth()).status_code == 200:
        assert time.monotonic() - banned_at < 0.2, "the other instance still serves the banned address"
        time.sleep(0.01)


def test_requests_per_minute_hold_across_instances(start_proxy, echo, redis):
    config = limited_config(echo.url, {"requests_per_minute": 60}, state=redis.url, state_connections=16)
    proxies = start_instances(start_proxy, config, 2)
    results = asyncio.run(statuses([p.url for p in proxies], 1000, auth(ALICE), at_once=0))
    assert results.count(200) == 60
    assert results.count(429) == 940


def test_tokens_per_minute_hold_across_instances(start_proxy, fake_tgi, redis):
    fake_tgi.reply = "one two three four five six seven"
    config = limited_config(fake_tgi.url, {"tokens_per_minute": 100}, state=redis.url)
    proxies = start_instances(start_proxy, config, count=2)
    first = httpx.post(f"{proxies[0].url}/v1/chat/completions", json=CHAT, headers=auth(ALICE))
    per_request = first.json()["usage"]["total_tokens"]
    admitted = 1
    for index in range(1, 40):
        time.sleep(0.05)  # the charge lands once the answer is sent
        answer = httpx.post(f"{proxies[index % 2].url}/v1/chat/completions", json=CHAT, headers=auth(ALICE))
        if answer.status_code == 429:
            break
        admitted += 1
    # Checked on arrival (is the window spent?), charged after: the request that crosses the line
    # is admitted, the next is not.
    assert admitted == -(-100 // per_request)
    assert answer.status_code == 429
    assert "on tokens per minute: limit 100" in answer.json()["error"]["message"]


def test_limited_answers_carry_openai_headers_and_a_429_in_openai_shape(start_proxy, echo):
    (proxy,) = start_instances(start_proxy, limited_config(echo.url, {"requests_per_minute": 2}))
    first = httpx.get(f"{proxy.url}/echo", headers=auth(ALICE))
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert re.fullmatch(r"(\d+s|1m0s)", first.headers["x-ratelimit-reset-requests"])
    assert httpx.get(f"{proxy.url}/echo", headers=auth(ALICE)).headers["x-ratelimit-remaining-requests"] == "0"
    refused = httpx.get(f"{proxy.url}/echo", headers=auth(ALICE))
    assert refused.status_code == 429
    # The 429 carries them too, as OpenAI's does.
    assert (refused.headers["x-ratelimit-limit-requests"], refused.headers["x-ratelimit-remaining-requests"]) == (
        "2",
        "0",
    )
    assert re.fullmatch(r"(\d+s|1m0s)", refused.headers["x-ratelimit-reset-requests"])
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["message"].startswith("Rate limit reached for client 'alice' on requests per minute: limit 2")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert int(refused.headers["retry-after-ms"]) <= 60_000
    # Keys without limits carry none of this, and pay nothing for it.
    assert "x-ratelimit-limit-requests" not in httpx.get(f"{proxy.url}/echo", headers=auth()).headers
    usage = httpx.get(f"{proxy.url}/_proxy/limits", headers=auth()).json()
    assert usage["clients"]["alice"]["requests_per_minute"]["used"] == 2
    metrics = httpx.get(f"{proxy.url}/_proxy/metrics", headers=auth()).text
    assert 'mooltiproxy_rate_limited_total{client="alice",limit="requests_per_minute"} 1' in metrics


def test_openai_python_retries_when_the_proxy_says(start_proxy, fake_tgi):
    (proxy,) = start_instances(start_proxy, limited_config(fake_tgi.url, {"max_concurrent": 1}))
    fake_tgi.reply = "one two three four five"
    fake_tgi.token_delay = 0.3  # a generation of 1.5 s

    async def scenario() -> tuple[int, float]:
        async with httpx.AsyncClient(timeout=10) as slow:
            # One request holds alice's only slot; the client's retry waits what it is told (1 s).
            holding = asyncio.create_task(slow.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=auth(ALICE)))
            await asyncio.sleep(0.3)
            client = OpenAI(base_url=f"{proxy.url}/v1", api_key=ALICE, max_retries=3)
            started = time.monotonic()
            raw = await asyncio.to_thread(client.chat.completions.with_raw_response.create, **CHAT)
            elapsed = time.monotonic() - started
            assert (await holding).status_code == 200
        return raw.retries_taken, elapsed

    retries, elapsed = asyncio.run(scenario())
    assert retries >= 1
    assert elapsed >= 1.0  # it waited at least the Retry-After it was given


def test_max_concurrent_frees_its_slot_when_the_request_ends(start_proxy, echo, redis):
    proxies = start_instances(start_proxy, limited_config(echo.url, {"max_concurrent": 2}, state=redis.url), 2)
    results = asyncio.run(statuses([p.url for p in proxies], 6, auth(ALICE), path="/slow?seconds=0.5"))
    assert results.count(200) == 2 and results.count(429) == 4
    assert httpx.get(f"{proxies[0].url}/echo", headers=auth(ALICE)).status_code == 200


def test_a_redis_outage_under_load_keeps_serving_on_local_state(start_proxy, echo, redis):
    config = limited_config(
        echo.url, {"requests_per_minute": 10_000}, state=redis.url, state_timeout=0.2, metrics_public=True
    )
    (proxy,) = start_instances(start_proxy, config)
    assert set(asyncio.run(statuses([proxy.url], 50, auth(ALICE)))) == {200}
    redis.stop()
    during = asyncio.run(statuses([proxy.url], 200, auth(ALICE), per_second=400))
    assert set(during) == {200}, "the store's outage reached clients"
    log = wait_for_log(proxy, "serving on local state")
    assert log.count("failed (") == 1, "the outage is logged once, not per request"
    metrics = httpx.get(f"{proxy.url}/_proxy/metrics").text
    assert re.search(r"^mooltiproxy_state_errors_total [1-9]", metrics, re.M)
    # A ban made meanwhile holds here at once, and reaches Redis once it is back.
    for _ in range(3):
        assert httpx.get(f"{proxy.url}/echo", headers=auth("wrong")).status_code == 401
    assert httpx.get(f"{proxy.url}/echo", headers=auth()).status_code == 403
    redis.start()
    wait_for_log(proxy, "1 local bans written to it", seconds=10)
    other = start_instances(start_proxy, config)[0]
    assert httpx.get(f"{other.url}/echo", headers=auth()).status_code == 403


def test_started_with_redis_down_it_serves_and_says_so(start_proxy, echo, redis):
    redis.stop()
    (proxy,) = start_instances(start_proxy, limited_config(echo.url, {"requests_per_minute": 5}, state=redis.url))
    assert "unreachable at start: serving on local state" in proxy.log()
    assert [httpx.get(f"{proxy.url}/echo", headers=auth(ALICE)).status_code for _ in range(6)] == [200] * 5 + [429]


def test_failing_closed_refuses_limited_keys_while_the_store_is_down(start_proxy, echo, redis):
    config = limited_config(echo.url, {"requests_per_minute": 5}, state=redis.url, limits_when_store_down="closed")
    (proxy,) = start_instances(start_proxy, config)
    redis.stop()
    refused = httpx.get(f"{proxy.url}/echo", headers=auth(ALICE))
    assert refused.status_code == 429
    assert "cannot be checked right now" in refused.json()["error"]["message"]
    assert httpx.get(f"{proxy.url}/echo", headers=auth()).status_code == 200  # no limit, no store needed


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ({"requests_per_minute": 0}, "clients.alice.limits.requests_per_minute: expected an integer >= 1"),
        ({"tokens": 5}, "clients.alice.limits.tokens: unknown key"),
    ],
)
def test_limits_are_validated(tmp_path, limits, problem):
    import yaml

    from conftest import run_cli

    config = limited_config("http://127.0.0.1:9", limits)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("--config", str(tmp_path / "config.yaml"), "--check", env={"ALICE_KEY": ALICE})
    assert result.returncode == 1
    assert problem in result.stderr


def test_pass_through_answers_are_charged_the_usage_they_report(start_proxy, fake_tgi):
    fake_tgi.reply = "one two three four five six"
    config = proxy_config(
        {"tgi": {"url": fake_tgi.url, "mapping": {"/generate_stream": None, "/generate": None}}},
        clients={"alice": {"envkey": "ALICE_KEY", "limits": {"tokens_per_minute": 1000}}},
    )
    (proxy,) = start_instances(start_proxy, config)

    def used() -> int:
        time.sleep(0.1)  # the charge lands once the answer is sent
        report = httpx.get(f"{proxy.url}/_proxy/limits", headers=auth()).json()
        return report["clients"]["alice"]["tokens_per_minute"]["used"]

    def stream(parameters: dict) -> None:
        body = {"inputs": "hi", "parameters": parameters}
        with httpx.stream("POST", f"{proxy.url}/generate_stream", json=body, headers=auth(ALICE)) as answer:
            assert answer.status_code == 200
            answer.read()

    stream({"max_new_tokens": 4})  # no details: one event per token
    assert used() == 4
    stream({"max_new_tokens": 3, "details": True})  # details: their generated_tokens
    assert used() == 7
    # TGI's /generate says its counts in headers: prompt and generated tokens.
    answer = httpx.post(
        f"{proxy.url}/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 2}}, headers=auth(ALICE)
    )
    assert used() == 7 + int(answer.headers["x-prompt-tokens"]) + 2


def test_the_usage_of_an_openai_compatible_answer_is_read_from_its_end():
    from mooltiproxy.forwarding.usage import UsageTail

    answer = (
        b'{"id": "x", "choices": [{"message": {"content": "' + b"a" * 40_000 + b'"}}], '
        b'"usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}}'
    )
    tail = UsageTail()
    for start in range(0, len(answer), 1000):
        tail.feed(answer[start : start + 1000])
    assert tail.tokens() == (12, 30)
    stream = UsageTail()
    for event in (
        b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n',
        b'data: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}\n\n',
        b"data: [DONE]\n\n",
    ):
        stream.feed(event)
    assert stream.tokens() == (5, 1)
