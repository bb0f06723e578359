"""The voluptuous schema of config.yaml: shapes, types, ranges and names of mappers and prompters.

Cross-references (default target, template names, env keys) are checked by the loader afterwards,
so that every problem is reported in one run.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterable, Mapping

import voluptuous as vol

DEFAULT_MAX_CONNECTIONS = 1024


def _number(minimum: float, *, exclusive: bool = True) -> Callable[[Any], float]:
    def validate(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise vol.Invalid("expected a number")
        if value < minimum or (exclusive and value == minimum):
            raise vol.Invalid(f"expected a number {'>' if exclusive else '>='} {minimum}, got {value}")
        return float(value)

    return validate


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def validate(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise vol.Invalid("expected an integer")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and <= {maximum}" if maximum is not None else ""
            raise vol.Invalid(f"expected an integer >= {minimum}{upper}, got {value}")
        return value

    return validate


def _address_list(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise vol.Invalid("expected a list of IP addresses or CIDR networks")
    errors = []
    for index, item in enumerate(value):
        try:
            ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            errors.append(vol.Invalid(f"'{item}' is not an IP address or CIDR network", path=[index]))
    if errors:
        raise vol.MultipleInvalid(errors)
    return [str(item) for item in value]


def _known_name(kind: str, known: Iterable[str]) -> Callable[[Any], str]:
    names = sorted(known)

    def validate(value: Any) -> str:
        if not isinstance(value, str):
            raise vol.Invalid(f"expected the name of a {kind}")
        if value not in names:
            raise vol.Invalid(f"unknown {kind} '{value}' (known: {', '.join(names) or 'none'})")
        return value

    return validate


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise vol.Invalid(f"expected a path starting with '/', got {value!r}")
    return value


def _http_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise vol.Invalid(f"expected an http:// or https:// URL, got {value!r}")
    return value


def _text(value: Any) -> str:
    """A template marker: a string, an empty YAML value meaning ''."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise vol.Invalid("expected a string")
    return value


def _section(schema: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A top-level section left empty in YAML (`system:` alone) means all defaults."""

    def validate(value: Any) -> Any:
        return schema({} if value is None else value)

    return validate


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


def _names(section: Any) -> list[str]:
    return [name for name in section if isinstance(name, str)] if isinstance(section, dict) else []


def build_schema(
    raw: dict, mapper_names: Iterable[str], prompter_names: Iterable[str], environ: Mapping[str, str]
) -> vol.Schema:
    """The schema for this raw document (template names and env vars are looked up in it)."""
    endpoint = vol.Schema(
        {
            vol.Optional("path"): _path,
            vol.Optional("in", default="identity"): _known_name("mapper", mapper_names),
            vol.Optional("out", default="identity"): _known_name("mapper", mapper_names),
            vol.Optional("prompter"): _known_name("prompter", prompter_names),
            vol.Optional("template"): _known_name("template", _names(raw.get("templates"))),
        }
    )

    def mapping_entry(value: Any) -> dict:
        # The original format: empty (same path), a path string, or an object.
        if value is None:
            return endpoint({})
        if isinstance(value, str):
            return endpoint({"path": _path(value)})
        if isinstance(value, dict):
            return endpoint(value)
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

    def default_is_a_target(targets: dict) -> list[vol.Invalid]:
        default = targets.get("default")
        names = [name for name in _names(targets) if name != "default"]
        if not isinstance(default, str) or default in names:
            return []
        known = ", ".join(names) or "none defined"
        return [vol.Invalid(f"'{default}' is not a defined target (targets: {known})", path=["default"])]

    target = _checked(
        vol.Schema(
            {
                vol.Required("url"): _http_url,
                vol.Optional("key"): vol.Any(None, str),
                vol.Optional("envkey"): str,
                vol.Optional("preserveMethod", default=False): bool,
                vol.Optional("max_connections", default=DEFAULT_MAX_CONNECTIONS): _integer(1),
                vol.Required("mapping"): _checked(vol.Schema({str: mapping_entry}), incoming_paths),
            }
        ),
        envkey_is_set,
    )

    return vol.Schema(
        {
            vol.Optional("system", default=None): _section(
                vol.Schema(
                    {
                        vol.Optional("host", default=None): vol.Any(None, str),
                        vol.Optional("port", default=8000): _integer(0, 65535),
                        vol.Optional("ssl", default=False): bool,
                        vol.Optional("certfile", default="certificates/cert.pem"): str,
                        vol.Optional("keyfile", default="certificates/key.pem"): str,
                        vol.Optional("debug", default=False): bool,
                        vol.Optional("timeout", default=300.0): _number(0),
                        vol.Optional("connect_timeout", default=3.05): _number(0),
                        vol.Optional("max_body_size", default=10 * 1024 * 1024): _integer(1),
                        vol.Optional("masterkey", default=None): vol.Any(None, str),
                    }
                )
            ),
            vol.Optional("cerbere", default=None): _section(
                vol.Schema(
                    {
                        vol.Optional("max_tries", default=3): _integer(1),
                        vol.Optional("whitelist", default=[]): _address_list,
                        vol.Optional("blacklist", default=[]): _address_list,
                    }
                )
            ),
            vol.Required("targets"): _checked(
                vol.Schema({vol.Required("default"): str, str: target}), default_is_a_target
            ),
            # Role markers of the `fromTemplate` prompter; roles beyond the usual ones are allowed.
            vol.Optional("templates", default=None): _section(vol.Schema({str: vol.Schema({str: _text})})),
        }
    )
