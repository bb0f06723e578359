"""The validators of config.yaml's values, each raising voluptuous's Invalid with a message that
says what was expected. A validator that needs the environment or the config's folder is made by
a factory taking a CheckContext."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import voluptuous as vol

Validator = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class CheckContext:
    environ: Mapping[str, str]
    folder: Path  # the config file's, which relative paths start from


@dataclass(frozen=True, slots=True)
class InContext:
    """A validator that is made for the config being read: `make(context)`."""

    make: Callable[[CheckContext], Validator]


def number(low: float, high: float = math.inf, *, exclusive: bool = True) -> Validator:
    """A number within bounds, excluded or included."""

    def validate(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise vol.Invalid("expected a number")
        inside = low < value < high if exclusive else low <= value <= high
        if not inside:
            above, below = (">", "<") if exclusive else (">=", "<=")
            bounds = f"{above} {low}" + (f" and {below} {high}" if high != math.inf else "")
            raise vol.Invalid(f"expected a number {bounds}, got {value}")
        return float(value)

    return validate


def integer(minimum: int, maximum: int | None = None) -> Validator:
    def validate(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise vol.Invalid("expected an integer")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and <= {maximum}" if maximum is not None else ""
            raise vol.Invalid(f"expected an integer >= {minimum}{upper}, got {value}")
        return value

    return validate


def one_of(*choices: str) -> Validator:
    return vol.In(list(choices), msg=f"expected {' or '.join(choices)}")


def optional(check: Validator | InContext) -> Validator | InContext:
    """None (YAML's null), or what `check` accepts, with its message when it does not."""
    if isinstance(check, InContext):
        return InContext(lambda context: _none_or(check.make(context)))
    return _none_or(check)


def _none_or(check: Validator) -> Validator:
    compiled = vol.Schema(check)  # a type (str, bool) is an isinstance check, never a conversion
    return lambda value: None if value is None else compiled(value)


def address_list(value: Any) -> list[str]:
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


def existing_file(folder: Path) -> Validator:
    def validate(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise vol.Invalid("expected a file path")
        if not (folder / value).is_file():
            raise vol.Invalid(f"no such file: '{folder / value}'")
        return value

    return validate


EXISTING_FILE = InContext(lambda context: existing_file(context.folder))


def admin_prefix(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or len(value.strip("/")) == 0:
        raise vol.Invalid("expected a path prefix such as /_proxy/")
    return "/" + value.strip("/") + "/"


def state_location(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise vol.Invalid("expected memory, the path of a SQLite file, or a redis:// or rediss:// URL")
    if "://" in value and not value.startswith(("redis://", "rediss://")):
        raise vol.Invalid("expected memory, the path of a SQLite file, or a redis:// or rediss:// URL")
    return value


def env_var(environ: Mapping[str, str]) -> Validator:
    def validate(name: Any) -> str:
        if not isinstance(name, str) or not environ.get(name):
            raise vol.Invalid(f"environment variable '{name}' is not set (or empty)")
        return name

    return validate


ENV_VAR = InContext(lambda context: env_var(context.environ))

CLIENT_ADDRESS_HEADERS = ("X-Forwarded-For", "Forwarded")


def client_address_header(value: Any) -> str:
    for name in CLIENT_ADDRESS_HEADERS:
        if isinstance(value, str) and value.lower() == name.lower():
            return name
    raise vol.Invalid(f"expected one of {', '.join(CLIENT_ADDRESS_HEADERS)}")


LIMITS = vol.Schema(
    {
        vol.Optional("requests_per_minute"): integer(1),
        vol.Optional("tokens_per_minute"): integer(1),
        vol.Optional("max_concurrent"): integer(1),
    }
)


def section(schema: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A top-level section left empty in YAML (`system:` alone) means all defaults."""

    def validate(value: Any) -> Any:
        return schema({} if value is None else value)

    return validate


# TGI parameters an endpoint may default (used when the client leaves the matching field unset),
# each limited to what TGI accepts.
TGI_DEFAULTS = vol.Schema(
    {
        vol.Optional("temperature"): number(0),
        vol.Optional("top_p"): number(0, 1),
        vol.Optional("typical_p"): number(0, 1),
        vol.Optional("top_k"): integer(1),
        vol.Optional("repetition_penalty"): number(0),
        vol.Optional("frequency_penalty"): number(-2, 2, exclusive=False),
        vol.Optional("max_new_tokens"): integer(1),
        vol.Optional("seed"): integer(0),
        vol.Optional("truncate"): integer(1),
        vol.Optional("do_sample"): bool,
        vol.Optional("watermark"): bool,
    }
)


# What a template may be given: names Jinja can read, and values YAML writes.
TEMPLATE_VARIABLES = vol.Schema({vol.Match(r"^[A-Za-z_][A-Za-z0-9_]*$"): vol.Any(str, int, float, bool, None)})


def names(value: Any) -> tuple[str, ...]:
    """A list of names (of guards, say), each once; whether they exist is checked beside."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise vol.Invalid("expected a list of names")
    if len(set(value)) != len(value):
        raise vol.Invalid("a name is listed twice")
    return tuple(value)
