"""The route table as an operator reads it: each incoming path, its target and what it does there.
Served by `GET /_proxy/routes` (proxy key) and printed by `--check --routes`."""

from __future__ import annotations

from typing import Any

from mooltiproxy.config.settings import Config


def route_table(config: Config) -> list[dict[str, Any]]:
    rows = []
    for name, target in config.targets.items():
        for path, endpoint in target.endpoints.items():
            translated = endpoint.request_mapper_name != "identity"
            guarding = endpoint.guarding
            rows.append(
                {
                    "path": path,
                    "target": name,
                    "default": name == config.default_target,
                    "upstream": endpoint.upstream_path,
                    "stream_upstream": endpoint.stream_path if endpoint.stream_translator is not None else None,
                    "methods": sorted(endpoint.methods),
                    "in": endpoint.request_mapper_name if translated else None,
                    "out": endpoint.answer_mapper_name if translated else None,
                    "prompter": endpoint.prompter_name,
                    "template": endpoint.template.name if endpoint.template is not None else None,
                    "tool_parser": endpoint.tool_parser,
                    "guards": guarding.names if guarding is not None else [],
                    "client_guards": list(guarding.choosable) if guarding is not None else [],
                }
            )
    return rows


def route_lines(config: Config) -> list[str]:
    """One line a route: `path -> target upstream: what it does`."""
    lines = []
    for row in route_table(config):
        where = f"{row['path']} -> {row['target']}{' (default)' if row['default'] else ''} {row['upstream']}"
        guarded = f"; guards {', '.join(row['guards'])}" if row["guards"] else ""
        if row["in"] is None:
            lines.append(f"{where}: passed through ({', '.join(row['methods'])}){guarded}")
            continue
        parts = [f"in {row['in']}", f"out {row['out']}"]
        if row["prompter"]:
            parts.append(
                f"prompter {row['prompter']}" + (f" with template {row['template']}" if row["template"] else "")
            )
        if row["tool_parser"]:
            parts.append(f"tool_parser {row['tool_parser']}")
        if row["stream_upstream"]:
            parts.append(f"streams to {row['stream_upstream']}")
        lines.append(f"{where}: " + "; ".join(parts) + guarded)
    return lines
