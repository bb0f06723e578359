"""The coding agents themselves, as their users run them, through the proxy onto TGI's /generate
with a Qwen3 reasoning model: Claude Code in print mode and Codex's `codex exec`, each thinking,
calling a tool the agent really runs, and sending its reasoning back on the next turn."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import KEY, npm_tools
from support import DATA
from support.routes import fronts_onto_tgi
from support.tool_calls import template_proxy

QWEN3 = DATA / "reasoning-templates" / "Qwen-Qwen3-0.6B.jinja"
# Pinned: each agent's request shapes change between versions, which is what this test is for.
AGENTS = ("@anthropic-ai/claude-code@2.1.197", "@openai/codex@0.171.0")


@pytest.fixture(scope="module")
def agents():
    return npm_tools("agents", *AGENTS)


@pytest.fixture
def proxy(start_proxy, fake_tgi, tmp_path):
    # The agents' own system prompts and tools run to some ten thousand tokens.
    fake_tgi.max_input_tokens, fake_tgi.max_total_tokens = 199_999, 200_000
    routes = fronts_onto_tgi(prompter="chat_template", template="Qwen3", tool_parser="hermes")
    return template_proxy(start_proxy, fake_tgi, tmp_path, QWEN3, routes, "Qwen3", eos_token="<|im_end|>")


def turn(thought: str, call: dict | None = None, text: str = "") -> str:
    """What a Qwen3 model writes: its thinking, then text or a call."""
    answer = f"<think>\n{thought}\n</think>\n\n{text}"
    return answer + (f"<tool_call>\n{json.dumps(call)}\n</tool_call>" if call else "")


def prompts(fake_tgi) -> list[str]:
    return [request.json()["inputs"] for request in fake_tgi.received if request.path.startswith("/generate")]


def run(command: list[str], folder, **environment: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(folder), **environment}
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=180)


def test_claude_code_thinks_runs_a_tool_and_sends_its_thinking_back(agents, proxy, fake_tgi, tmp_path):
    fake_tgi.replies = [
        turn("I should run a command to greet.", {"name": "Bash", "arguments": {"command": "echo hi-from-tool"}}),
        turn("The command printed hi.", text="The command said hi-from-tool."),
    ]
    result = run(
        [str(agents / "claude"), "-p", "Greet me with a command", "--model", "qwen3"]
        + ["--output-format", "stream-json", "--verbose", "--allowedTools", "Bash(echo:*)"],
        tmp_path,
        ANTHROPIC_BASE_URL=proxy.url,
        ANTHROPIC_API_KEY=KEY,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    blocks = [
        (event["type"], block["type"], block.get("thinking") or block.get("text") or block.get("name"))
        for event in events
        if event["type"] in ("assistant", "user")
        for block in event["message"]["content"]
    ]
    assert ("assistant", "thinking", "I should run a command to greet.") in blocks
    assert ("assistant", "tool_use", "Bash") in blocks
    assert ("assistant", "text", "The command said hi-from-tool.") in blocks
    assert events[-1]["result"] == "The command said hi-from-tool."
    asked = prompts(fake_tgi)
    assert len(asked) == 2 and "hi-from-tool" in asked[1]  # Claude Code ran the command
    assert "<think>\nI should run a command to greet.\n</think>\n\n<tool_call>" in asked[1]


def test_codex_exec_thinks_runs_a_command_and_replays_its_reasoning(agents, proxy, fake_tgi, tmp_path):
    fake_tgi.replies = [
        turn("I should run echo to greet.", {"name": "exec_command", "arguments": {"cmd": "echo hi-from-codex"}}),
        turn("The command ran.", text="The command said hi-from-codex."),
    ]
    provider = f'{{name="proxy",base_url="{proxy.url}/v1",env_key="PROXY_KEY",wire_api="responses"}}'
    result = run(
        [str(agents / "codex"), "exec", "--skip-git-repo-check", "--json", "-m", "qwen3"]
        + ["-c", 'model_provider="proxy"', "-c", f"model_providers.proxy={provider}", "Greet me with a command"],
        tmp_path,
        PROXY_KEY=KEY,
        CODEX_HOME=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    items = [json.loads(line).get("item", {}) for line in result.stdout.splitlines() if line.startswith("{")]
    commands = [item for item in items if item.get("type") == "command_execution"]
    assert commands and "hi-from-codex" in commands[-1]["aggregated_output"]
    assert [item["text"] for item in items if item.get("type") == "agent_message"] == [
        "The command said hi-from-codex."
    ]
    # Codex sends no store: its next request carries the whole history, reasoning items included.
    asked = prompts(fake_tgi)
    assert len(asked) == 2 and "hi-from-codex" in asked[1]
    assert "<think>\nI should run echo to greet.\n</think>\n\n<tool_call>" in asked[1]
