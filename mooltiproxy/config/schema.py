"""The voluptuous schema of config.yaml: shapes, types, ranges, names of mappers and prompters,
and the cross-references (default target, templates, env keys, models), checked beside the shapes
so that every problem is reported in one run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import voluptuous as vol

from mooltiproxy.config import checks
from mooltiproxy.config.checks import CheckContext
from mooltiproxy.config.declared import default_of, section_schema
from mooltiproxy.config.guards import guards_section
from mooltiproxy.config.plugin_specs import MapperSpec, PrompterSpec
from mooltiproxy.config.settings import (
    MASTER,
    NEVER_FORWARDED_METHODS,
    REASONING_PARSER_NAMES,
    TOOL_PARSER_NAMES,
    Endpoint,
    GuardSettings,
    SystemSettings,
    Target,
)
from mooltiproxy.config.template_entries import builtin_templates, kind_of, template_entry_validator


def _sha256_hex(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise vol.Invalid("expected the SHA-256 of the key, as 64 hexadecimal digits")
    return value.lower()


def _known_name(kind: str, known: Iterable[str]) -> Callable[[Any], str]:
    names = sorted(known)

    def validate(value: Any) -> str:
        if not isinstance(value, str):
            raise vol.Invalid(f"expected the name of a {kind}")
        if value not in names:
            raise vol.Invalid(f"unknown {kind} '{value}' (known: {', '.join(names) or 'none'})")
        return value

    return validate


def _chain(mappers: Mapping[str, MapperSpec]) -> Callable[[Any], list[str]]:
    """A mapper's name, or a list of them applied in order."""
    known = _known_name("mapper", mappers)

    def validate(value: Any) -> list[str]:
        if isinstance(value, list):
            if not value:
                raise vol.Invalid("expected a mapper's name, or a non-empty list of them")
            return [known(name) for name in value]
        return [known(value)]

    return validate


def _chain_fits(spec: dict, side: str, mappers: Mapping[str, MapperSpec]) -> list[vol.Invalid]:
    """Each link gives what the next one takes (mappers that declare no kinds fit anything)."""
    names = spec.get(side)
    if not isinstance(names, list) or not all(isinstance(name, str) and name in mappers for name in names):
        return []  # the schema itself reports it
    links = [(index, name, mappers[name]) for index, name in enumerate(names) if name != "identity"]
    errors = []
    for (_, before, first), (index, after, second) in zip(links, links[1:], strict=False):
        gives, takes = first.gives, second.takes
        if gives and takes and gives != takes:
            errors.append(
                vol.Invalid(f"'{after}' takes {takes}, but '{before}' before it gives {gives}", path=[side, index])
            )
    return errors


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise vol.Invalid(f"expected a path starting with '/', got {value!r}")
    return value


def _method(value: Any) -> str:
    if not isinstance(value, str) or not value.isalpha():
        raise vol.Invalid("expected an HTTP method name such as POST")
    method = value.upper()
    if method in NEVER_FORWARDED_METHODS:
        raise vol.Invalid(f"{method} is never forwarded")
    return method


def _http_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise vol.Invalid(f"expected an http:// or https:// URL, got {value!r}")
    return value


Check = Callable[[dict], list[vol.Invalid]]


def _checked(schema: vol.Schema, *checks: Check) -> Callable[[Any], Any]:
    """The schema plus cross-field checks on the raw mapping, all their errors reported together."""

    def validate(value: Any) -> Any:
        errors: list[vol.Invalid] = []
        result = None
        try:
            result = schema(value)
        except vol.MultipleInvalid as exc:
            errors.extend(exc.errors)
        if isinstance(value, dict):
            for check in checks:
                errors.extend(check(value))
        if errors:
            raise vol.MultipleInvalid(errors)
        return result

    return validate


def _raw_admin_prefix(raw: dict) -> str:
    system = raw.get("system")
    try:
        return checks.admin_prefix(system.get("admin_prefix", "/_proxy/")) if isinstance(system, dict) else "/_proxy/"
    except vol.Invalid:
        return "/_proxy/"


def _names(section: Any) -> list[str]:
    return [name for name in section if isinstance(name, str)] if isinstance(section, dict) else []


def _inflight_covers_a_body(system: dict[str, Any]) -> dict[str, Any]:
    inflight = system.get("max_inflight_bytes", default_of(SystemSettings, "max_inflight_bytes"))
    if inflight < system.get("max_body_size", default_of(SystemSettings, "max_body_size")):
        raise vol.Invalid(
            "must be at least max_body_size, or no request that large could ever be served", path=["max_inflight_bytes"]
        )
    return system


def build_schema(
    raw: dict,
    mappers: Mapping[str, MapperSpec],
    prompters: Mapping[str, PrompterSpec],
    environ: Mapping[str, str],
    folder: Path,
) -> vol.Schema:
    """The schema for this raw document (template names and env vars are looked up in it)."""
    context = CheckContext(environ, folder)
    raw_templates: dict[str, Any] = raw["templates"] if isinstance(raw.get("templates"), dict) else {}
    builtins = builtin_templates()
    endpoint_schema = vol.Schema(
        {
            vol.Optional("path"): _path,
            vol.Optional("stream_path"): _path,
            vol.Optional("in", default=["identity"]): _chain(mappers),
            vol.Optional("out", default=["identity"]): _chain(mappers),
            vol.Optional("prompter"): _known_name("prompter", prompters),
            vol.Optional("template"): _known_name("template", [*_names(raw_templates), *builtins]),
            **section_schema(Endpoint, context),
            vol.Optional("methods"): vol.All([_method], vol.Length(min=1)),
            vol.Optional("tool_parser"): vol.In(
                list(TOOL_PARSER_NAMES), msg=f"expected one of {', '.join(TOOL_PARSER_NAMES)}"
            ),
            vol.Optional("reasoning_parser", default="auto"): vol.In(
                list(REASONING_PARSER_NAMES), msg=f"expected one of {', '.join(REASONING_PARSER_NAMES)}"
            ),
        }
    )

    def requirements(spec: dict) -> list[vol.Invalid]:
        """A mapper that builds prompts needs a prompter; some prompters need a kind of template;
        the links of a chain must fit."""
        errors = [*_chain_fits(spec, "in", mappers), *_chain_fits(spec, "out", mappers)]
        chain = spec.get("in", [])
        for mapper_name in chain if isinstance(chain, list) else [chain]:
            declared = mappers.get(mapper_name)
            if declared is not None and declared.needs_prompter and "prompter" not in spec:
                errors.append(vol.Invalid(f"mapper '{mapper_name}' needs a prompter", path=["prompter"]))
        prompter_name = spec.get("prompter", "")
        declared_prompter = prompters.get(prompter_name)
        kinds = declared_prompter.template_kinds if declared_prompter is not None else ()
        template_name = spec.get("template")
        if kinds and template_name is None:
            errors.append(vol.Invalid(f"prompter '{prompter_name}' needs a template", path=["template"]))
        elif kinds and isinstance(template_name, str):
            kind = kind_of(raw_templates[template_name]) if template_name in raw_templates else "jinja"
            if kind not in kinds:
                errors.append(
                    vol.Invalid(
                        f"prompter '{prompter_name}' needs a {' or '.join(kinds)} template; "
                        f"'{template_name}' has {kind}",
                        path=["template"],
                    )
                )
        return errors

    endpoint = _checked(endpoint_schema, requirements)

    def mapping_entry(value: Any) -> dict[str, Any]:
        # The original format: empty (same path), a path string, or an object.
        if value is None:
            value = {}
        elif isinstance(value, str):
            value = {"path": _path(value)}
        if isinstance(value, dict):
            validated: dict[str, Any] = endpoint(value)
            return validated
        raise vol.Invalid("expected nothing (pass through), a target path, or a mapping object")

    def incoming_paths(mapping: dict) -> list[vol.Invalid]:
        errors = [
            vol.Invalid("an incoming path must start with '/'", path=[name])
            for name in mapping
            if not (isinstance(name, str) and name.startswith("/"))
        ]
        if not mapping:
            errors.append(vol.Invalid("no path is mapped: the target would be unreachable"))
        return errors

    def envkey_is_set(target: dict) -> list[vol.Invalid]:
        # A `key` wins over `envkey`, so the variable only matters without one.
        envkey = target.get("envkey")
        if target.get("key") or not isinstance(envkey, str) or environ.get(envkey):
            return []
        return [vol.Invalid(f"environment variable '{envkey}' is not set (or empty)", path=["envkey"])]

    admin_prefix = _raw_admin_prefix(raw)

    def outside_admin_prefix(mapping: dict) -> list[vol.Invalid]:
        return [
            vol.Invalid(f"paths under the admin prefix {admin_prefix} are the proxy's own", path=[name])
            for name in mapping
            if isinstance(name, str) and (name + "/").startswith(admin_prefix)
        ]

    target_names = [name for name in _names(raw.get("targets")) if name != "default"]

    def client_key_source(client: dict) -> list[vol.Invalid]:
        sources = [key for key in ("envkey", "sha256") if key in client]
        if len(sources) != 1:
            return [vol.Invalid("give the key as exactly one of envkey or sha256 (never in plain text)")]
        return envkey_is_set(client)

    def master_is_reserved(clients: dict) -> list[vol.Invalid]:
        if MASTER in clients:
            return [vol.Invalid(f"'{MASTER}' names the proxy key's holder", path=[MASTER])]
        return []

    def models_claimed_once(targets: dict) -> list[vol.Invalid]:
        owners: dict[str, str] = {}
        errors = []
        for name, entry in targets.items():
            models = entry.get("models") if isinstance(entry, dict) else None
            for model in models if isinstance(models, list | dict) else []:
                if isinstance(model, str) and owners.setdefault(model, name) != name:
                    errors.append(
                        vol.Invalid(f"model '{model}' is claimed by {owners[model]} too", path=[name, "models"])
                    )
        return errors

    def no_fallback_on_itself(targets: dict) -> list[vol.Invalid]:
        return [
            vol.Invalid("a target cannot fall back on itself", path=[name, "fallback"])
            for name, entry in targets.items()
            if isinstance(entry, dict) and isinstance(entry.get("fallback"), list) and name in entry["fallback"]
        ]

    def default_is_a_target(targets: dict) -> list[vol.Invalid]:
        default = targets.get("default")
        names = [name for name in _names(targets) if name != "default"]
        if not isinstance(default, str) or default in names:
            return []
        known = ", ".join(names) or "none defined"
        return [vol.Invalid(f"'{default}' is not a defined target (targets: {known})", path=["default"])]

    def one_url_source(target: dict) -> list[vol.Invalid]:
        if "url" in target and "urls" in target:
            return [vol.Invalid("give url or urls, not both", path=["urls"])]
        if "url" not in target and "urls" not in target:
            return [vol.Invalid("required key is missing (or urls: a list of them)", path=["url"])]
        return []

    target = _checked(
        vol.Schema(
            {
                **section_schema(Target, context),
                vol.Optional("url"): _http_url,
                vol.Optional("urls"): vol.All([_http_url], vol.Length(min=1)),
                vol.Optional("fallback", default=[]): [_known_name("target", target_names)],
                # Names routed here; as a mapping, each to the name the target knows it by.
                vol.Optional("models", default=[]): vol.Any([str], {str: vol.Any(None, str)}),
                vol.Optional("key"): vol.Any(None, str),
                vol.Optional("envkey"): str,
                vol.Optional("verify", default=True): vol.Any(bool, checks.existing_file(folder)),
                vol.Required("mapping"): _checked(
                    vol.Schema({str: mapping_entry}), incoming_paths, outside_admin_prefix
                ),
            }
        ),
        envkey_is_set,
        one_url_source,
    )
    client = _checked(
        vol.Schema(
            {
                vol.Optional("envkey"): str,
                vol.Optional("sha256"): _sha256_hex,
                vol.Optional("targets", default=None): vol.Any(None, [_known_name("target", target_names)]),
                vol.Optional("limits", default=None): vol.Any(None, checks.LIMITS),
            }
        ),
        client_key_source,
    )

    guard_names = _names(raw.get("guards"))

    def guards_known(document: dict) -> list[vol.Invalid]:
        """Every list of guards names guards of `guards:`."""
        lists: list[tuple[list[Any], Any]] = []
        system, targets = document.get("system"), document.get("targets")
        if isinstance(system, dict):
            lists.append((["system", "guards"], system.get("guards")))
        for name, target in targets.items() if isinstance(targets, dict) else ():
            if not isinstance(target, dict):
                continue
            lists.append((["targets", name, "guards"], target.get("guards")))
            mapping = target.get("mapping")
            for path, entry in mapping.items() if isinstance(mapping, dict) else ():
                for key in ("guards", "client_guards"):
                    value = entry.get(key) if isinstance(entry, dict) else None
                    lists.append((["targets", name, "mapping", path, key], value))
        return [
            vol.Invalid(f"unknown guard '{guard}' (guards: {', '.join(guard_names) or 'none defined'})", path=where)
            for where, value in lists
            if isinstance(value, list)
            for guard in value
            if isinstance(guard, str) and guard not in guard_names
        ]

    document = vol.Schema(
        {
            # Named guards on what goes in and comes out; system, targets and routes list them.
            vol.Optional("guards", default=None): guards_section(context),
            vol.Optional("system", default=None): checks.section(
                vol.All(section_schema(SystemSettings, context), _inflight_covers_a_body)
            ),
            vol.Optional("cerbere", default=None): checks.section(vol.Schema(section_schema(GuardSettings, context))),
            vol.Optional("clients", default=None): checks.section(
                _checked(vol.Schema({str: client}), master_is_reserved)
            ),
            vol.Required("targets"): _checked(
                vol.Schema({vol.Required("default"): str, str: target}),
                default_is_a_target,
                models_claimed_once,
                no_fallback_on_itself,
            ),
            # Role markers for `fromTemplate`, or a whole Jinja template (see template_entries).
            vol.Optional("templates", default=None): checks.section(
                vol.Schema({str: template_entry_validator(folder)})
            ),
        }
    )
    return vol.Schema(_checked(document, guards_known))
