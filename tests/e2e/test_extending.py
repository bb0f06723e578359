"""docs/extending.md's worked example, run as written: a new front added to a copy of the package
as one module and a line of FRONTS, and called by a client of its API."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import yaml

from conftest import KEY, REPO, proxy_config

GUIDE = (REPO / "docs" / "extending.md").read_text()


def _block(language: str, first_line: str) -> str:
    """The guide's code block in `language` whose text starts with `first_line`."""
    for block in re.findall(rf"```{language}\n(.*?)```", GUIDE, re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"docs/extending.md has no {language} block starting with {first_line!r}")


def _package_with_the_example(folder: Path) -> Path:
    copy = folder / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("mooltiproxy", "mappers", "prompters"):
        shutil.copytree(REPO / name, copy / name, ignore=ignore, symlinks=True)
    shutil.copy(REPO / "main.py", copy / "main.py")
    (copy / "mooltiproxy" / "fronts" / "ollama.py").write_text(_block("python", "# mooltiproxy/fronts/ollama.py"))
    registry = copy / "mooltiproxy" / "fronts" / "__init__.py"
    registry.write_text(registry.read_text() + _block("python", "from mooltiproxy.fronts.ollama import OllamaFront"))
    return copy


def test_the_worked_example_front_serves_its_clients(tmp_path, start_proxy, fake_tgi):
    route = yaml.safe_load(_block("yaml", "      /api/chat:"))
    target = {"url": fake_tgi.url, "mapping": route}
    proxy = start_proxy(proxy_config({"tgi": target}), repo=_package_with_the_example(tmp_path))
    fake_tgi.reply = "Bonjour !"
    ask = {"model": "m", "stream": False, "messages": [{"role": "user", "content": "Say hello"}]}
    answer = httpx.post(f"{proxy.url}/api/chat", json={**ask, "options": {"num_predict": 5}}, headers=_auth())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["message"] == {"role": "assistant", "content": "Bonjour !"}
    assert body["done"] is True and body["eval_count"] > 0
    sent = fake_tgi.last.json()
    assert "Say hello" in sent["inputs"] and sent["parameters"]["max_new_tokens"] == 5
    # The front's own error shape, the guard's refusals included.
    refused = httpx.post(f"{proxy.url}/api/chat", json=ask)
    assert refused.status_code == 401 and set(refused.json()) == {"error"}
    streamed = httpx.post(f"{proxy.url}/api/chat", json={**ask, "stream": True}, headers=_auth())
    assert streamed.status_code == 400 and "stream" in streamed.json()["error"]


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}
