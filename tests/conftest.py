"""Shared fixtures: the fake upstreams (in-process threads) and the proxy (a real subprocess)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import venv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from support.echo_upstream import EchoUpstream
from support.fake_tei import FakeTEI
from support.fake_tgi import FakeTGI
from support.fake_vllm import FakeVLLM

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
KEY = "test-master-key-0123456789abcdef"
# A chat request's tool and question, for the tests of tool calls.
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
# What a model writes under TGI's tool grammar (router/src/infer/tool_grammar.rs) to call
# get_weather(city=Paris), and to answer without a tool.
GRAMMAR_CALL = '{"function": {"_name": "get_weather", "city": "Paris"}}'


def grammar_no_tool(content: str) -> str:
    return json.dumps({"function": {"_name": "no_tool", "content": content}})


def grammar_choices(sent: dict) -> list[str]:
    """The tools a grammar sent to TGI lets the model call."""
    choices = sent["parameters"]["grammar"]["value"]["properties"]["function"]["anyOf"]
    return [choice["$ref"].removeprefix("#/$functions/") for choice in choices]


_LISTENING = re.compile(r"listening on (https?)://127\.0\.0\.1:(\d+)")


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`python -m main ARGS` with a clean environment plus `env`; never raises on exit codes."""
    return subprocess.run(
        [sys.executable, "-m", "main", *args],
        cwd=cwd,
        env=_environment(env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def _environment(extra: dict[str, str] | None, repo: Path = REPO) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("MOOLTIPROXY")}
    env["PYTHONPATH"] = str(repo)
    env.update(extra or {})
    return env


class ProxyProcess:
    """The proxy started as a user would start it, on a port the OS picks."""

    def __init__(self, config: dict[str, Any], folder: Path, env: dict[str, str] | None = None, repo: Path = REPO):
        self.config_path = folder / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = folder / "proxy.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "main", "--config", str(self.config_path)],
            cwd=repo,
            env=_environment({"MOOLTIPROXY_KEY": KEY, **(env or {})}, repo),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = self._wait_until_listening()

    def _wait_until_listening(self) -> str:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log())
            if match:
                return f"{match.group(1)}://127.0.0.1:{match.group(2)}"
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise RuntimeError(f"proxy did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def proxy_config(targets: dict[str, Any], default: str | None = None, **sections: Any) -> dict[str, Any]:
    system = {"host": "127.0.0.1", "port": 0, **sections.pop("system", {})}
    return {
        "system": system,
        **sections,
        "targets": {"default": default or next(iter(targets)), **targets},
    }


@pytest.fixture(scope="session")
def fake_tgi() -> Iterator[FakeTGI]:
    server = FakeTGI().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_tei() -> Iterator[FakeTEI]:
    server = FakeTEI().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_vllm() -> Iterator[FakeVLLM]:
    server = FakeVLLM().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_fakes(request: pytest.FixtureRequest) -> None:
    for name in ("fake_tgi", "fake_vllm"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


@pytest.fixture(scope="session")
def echo() -> Iterator[EchoUpstream]:
    server = EchoUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def start_proxy(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def start(config: dict[str, Any], env: dict[str, str] | None = None, repo: Path = REPO) -> ProxyProcess:
        """The proxy of `repo` (a copy of this one, say), serving `config`."""
        folder = tmp_path / f"proxy{len(started)}"
        folder.mkdir()
        proxy = ProxyProcess(config, folder, env, repo)
        started.append(proxy)
        # The proxy asks each target what it serves (/info, /v1/models) before it listens: the
        # test's own requests are what the fakes record from here on.
        for name in ("fake_tgi", "fake_vllm", "fake_tei", "echo", "scripted"):
            if name in request.fixturenames:
                request.getfixturevalue(name).forget()
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
        log = proxy.log()
        assert KEY not in log, "the master key leaked into the log"
        assert "Traceback" not in log, f"traceback in the proxy log:\n{log}"


def wait_for_log(proxy: ProxyProcess, text: str, seconds: float = 3) -> str:
    """The proxy's log once it holds `text` (lines are flushed a moment after they are logged)."""
    deadline = time.monotonic() + seconds
    while text not in (log := proxy.log()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert text in log
    return log


class RedisServer:
    """A real redis-server on a free loopback port, without persistence; it can be stopped and
    started again on the same port (an outage)."""

    def __init__(self, folder: Path):
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
            connection.sendall(b"FLUSHALL\r\n")
            connection.recv(16)


REDIS_SERVER = shutil.which("redis-server")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, emptied, and running again if a test stopped it."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    return redis_server


def client_venv(name: str, *requirements: str) -> Path:
    """The python of a venv of its own, for a client that cannot share the suite's (openai<1,
    text-generation with huggingface-hub<1); built once under .cache/ and kept between runs."""
    folder = REPO / ".cache" / name
    python = folder / "bin" / "python"
    if not (folder / "ready").exists():
        venv.create(folder, with_pip=True, clear=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True, timeout=600)
        (folder / "ready").touch()
    return python


def npm_tools(name: str, *packages: str) -> Path:
    """The bin folder of npm packages (coding agents), installed once under .cache/ and kept."""
    folder = REPO / ".cache" / name
    if not (folder / "ready").exists():
        subprocess.run(
            ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", *packages], check=True, timeout=900
        )
        (folder / "ready").touch()
    return folder / "node_modules" / ".bin"


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# A TGI error answer (status, message, error_type) and the openai exception it must become.
TGI_FAILURES = [
    ((424, "Request failed during generation", "generation"), openai.APIStatusError),
    ((429, "Model is overloaded", "overloaded"), openai.RateLimitError),
    ((500, "Incomplete generation", "incomplete_generation"), openai.InternalServerError),
]
