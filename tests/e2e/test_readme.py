"""The README's examples, run as written against the proxy started from config.template.yaml.

Only the address changes: the README's proxy listens on 127.0.0.1:8000 and its TGI on 8080, the
test's on ports the OS picks. Fenced `sh` and `python` blocks are run; `text` and `yaml` ones are
not. A client that cannot share the suite's environment runs in a venv of its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import KEY, REPO, ProxyProcess, client_venv

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"^```(sh|python)\n(.*?)^```", README, re.M | re.S)
README_PROXY = "http://127.0.0.1:8000"
REPLY = "Deep learning learns layered representations from data."


def interpreter(source: str) -> Path | str:
    if "openai.api_base" in source:
        return client_venv("openai-0.28.1", "openai==0.28.1")
    if "from text_generation import" in source:
        return client_venv("text-generation-0.7", "text-generation==0.7.0")
    return sys.executable


def block_id(block: tuple[str, str]) -> str:
    language, source = block
    imports = re.findall(r"^(?:from (\S+) import|import (\S+))", source, re.M)
    names = [name for pair in imports for name in pair if name and name != "os"]
    return f"{language}-{'-'.join(names) or 'curl'}"


def test_the_run_command_reads_the_key_from_its_file_only_and_never_prints_it():
    run = README.split("\n\n")[2].strip()
    assert run.startswith("python3 -m venv .venv") and run.endswith(".venv/bin/python -m main")
    assert 'export MOOLTIPROXY_KEY="$(cat .proxy-key)"' in run  # not one left in the shell
    assert "echo" in run and "$MOOLTIPROXY_KEY" not in run.split("echo", 1)[1]


def test_the_readme_has_every_client_example():
    assert [block_id(block) for block in BLOCKS] == [
        "sh-curl",
        "python-openai",
        "python-openai",
        "python-langchain_openai",
        "python-anthropic",
        "python-text_generation",
        "python-huggingface_hub",
    ]


@pytest.fixture(scope="module")
def template_proxy(fake_tgi, tmp_path_factory):
    """The proxy of the README's first command: config.template.yaml, its TGI being the fake one."""
    config = yaml.safe_load((REPO / "config.template.yaml").read_text())
    config["system"].update(host="127.0.0.1", port=0)
    config["targets"]["tgi"]["url"] = fake_tgi.url
    proxy = ProxyProcess(config, tmp_path_factory.mktemp("readme"))
    yield proxy
    proxy.stop()
    assert KEY not in proxy.log() and "Traceback" not in proxy.log()


@pytest.mark.parametrize("block", BLOCKS, ids=[block_id(block) for block in BLOCKS])
def test_readme_example_runs_as_written(block, template_proxy, fake_tgi, tmp_path):
    language, source = block
    fake_tgi.reply = REPLY
    source = source.replace(README_PROXY, template_proxy.url)
    # The second terminal of "Trying it": in the proxy's folder, whose .proxy-key holds the key.
    (tmp_path / ".proxy-key").write_text(KEY + "\n")
    if language == "sh":
        command = ["bash", "-e", "-c", source]
        # A key from an earlier try still in the shell: the README reads the key from one place.
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MOOLTIPROXY_KEY": "an-old-key-0123456789abcdef"}
    else:
        (tmp_path / "example.py").write_text(source)
        command = [str(interpreter(source)), "example.py"]
        env = {"MOOLTIPROXY_KEY": KEY, "HOME": str(tmp_path)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert fake_tgi.received, "the example never reached the target"
    assert "Deep learning" in result.stdout
    if language == "sh":
        assert re.search(r"401$", result.stdout, re.M), "the request without a key was not refused"
    assert KEY not in template_proxy.log()
