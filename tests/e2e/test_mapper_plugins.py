"""User mappers dropped into mappers/: found by name, with the original or the context signature."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

from conftest import auth, proxy_config, run_cli, wait_for_log

PLUGIN = textwrap.dedent(
    """
    import json

    from mooltiproxy.plugin import Note

    ASKED = Note[str]("mine.asked")


    def tagRequest(payload, endpoint, context):
        context.notes[ASKED] = payload["prompt"]
        return {**payload, "tagged_by": "tagRequest", "endpoint": endpoint.incoming_path}


    def describeAnswer(payload, endpoint, context):
        return {
            "upstream_saw": json.loads(payload["body"]),
            "client_sent": context.body,
            "target": context.target.name,
            "upstream_header": context.upstream_headers["X-Upstream"],
            "noted": context.notes.get(ASKED),
        }


    def brokenAnswer(payload, endpoint):
        raise RuntimeError("a bug in a user mapper")


    def _helper(payload):
        return payload
    """
)


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    """A plug-in folder, as `system.plugins` names it, with a module of mappers."""
    folder = tmp_path / "plugins"
    (folder / "mappers").mkdir(parents=True)
    (folder / "mappers" / "mine.py").write_text(PLUGIN)
    return folder


def test_user_mappers_are_found_by_name(plugins, start_proxy, echo):
    config = proxy_config(
        {
            "echo": {
                "url": echo.url,
                "mapping": {
                    "/tagged": {"path": "/echo", "in": "tagRequest", "out": "describeAnswer"},
                    "/broken": {"path": "/echo", "out": "brokenAnswer"},
                },
            }
        },
        system={"plugins": str(plugins)},
    )
    proxy = start_proxy(config)
    answer = httpx.post(f"{proxy.url}/tagged", json={"prompt": "hi"}, headers=auth())
    assert answer.status_code == 200, answer.text
    assert echo.last.json() == {"prompt": "hi", "tagged_by": "tagRequest", "endpoint": "/tagged"}
    assert echo.last.headers["Content-Type"] == "application/json"
    assert answer.json() == {
        "upstream_saw": {"prompt": "hi", "tagged_by": "tagRequest", "endpoint": "/tagged"},
        "client_sent": {"prompt": "hi"},
        "target": "echo",
        "upstream_header": "echo",
        "noted": "hi",
    }

    for bad_body in (b"{not json", b"[1, 2]", b""):
        refused = httpx.post(f"{proxy.url}/tagged", content=bad_body, headers=auth())
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "invalid_json"

    broken = httpx.post(f"{proxy.url}/broken", json={}, headers=auth())
    assert broken.status_code == 500
    assert "a bug in a user mapper" not in broken.text
    assert broken.json()["error"]["code"] == "mapper_error"
    wait_for_log(proxy, "mapper brokenAnswer failed on /broken: RuntimeError: a bug in a user mapper")


def test_private_helpers_are_not_mappers(plugins, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "system:\n  plugins: plugins\n"
        "targets:\n  default: a\n  a:\n    url: http://127.0.0.1:1\n    mapping:\n      /x:\n        in: _helper\n"
    )
    result = run_cli("--config", str(config), "--check")
    assert result.returncode == 1
    assert "unknown mapper '_helper'" in result.stderr
    assert "tagRequest" in result.stderr


def test_a_mapper_module_that_fails_to_import_is_reported(tmp_path):
    (tmp_path / "mappers").mkdir()
    (tmp_path / "mappers" / "broken.py").write_text("import a_module_that_does_not_exist\n")
    config = tmp_path / "config.yaml"  # its folder is where plug-ins are looked for by default
    config.write_text("targets:\n  default: a\n  a:\n    url: http://127.0.0.1:1\n    mapping:\n      /x:\n")
    result = run_cli("--config", str(config), "--check")
    assert result.returncode == 1
    assert "cannot import mappers.broken: ModuleNotFoundError" in result.stderr
    assert "Traceback" not in result.stderr
