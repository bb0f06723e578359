"""Each setting declared once: a dataclass field whose metadata carries its check, its YAML key
when it differs from the field's name, how its YAML value becomes the setting, and whether only a
restart changes it. The schema, the loader's copying and the reload's restart-only list are all
read from these declarations; a key the YAML leaves out gets the field's default."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import voluptuous as vol

from mooltiproxy.config.checks import CheckContext, InContext, Validator


@dataclass(frozen=True, slots=True)
class Declared:
    check: Validator | InContext
    key: str | None  # its YAML key, when not the field's name
    read: Callable[[Any, Path], Any] | None  # (YAML value, the config's folder) -> the setting
    restart: bool  # a reload keeps the running value
    path: bool  # a path relative to the config's folder, its default too


def setting(
    default: Any = dataclasses.MISSING,
    check: Validator | InContext = lambda value: value,
    *,
    factory: Callable[[], Any] | None = None,
    key: str | None = None,
    read: Callable[[Any, Path], Any] | None = None,
    restart: bool = False,
    path: bool = False,
) -> Any:
    """A field of a settings dataclass, declared with everything the config needs of it."""
    metadata = {"declared": Declared(check, key, read, restart, path)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _declared(cls: type) -> list[tuple[dataclasses.Field, Declared]]:
    return [(f, f.metadata["declared"]) for f in dataclasses.fields(cls) if "declared" in f.metadata]


def default_of(cls: type, name: str) -> Any:
    field = next(field for field in dataclasses.fields(cls) if field.name == name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def section_schema(cls: type, context: CheckContext) -> dict[Any, Validator]:
    """The voluptuous schema of a section whose keys are the dataclass's declared fields."""
    schema = {}
    for field, declared in _declared(cls):
        check = declared.check.make(context) if isinstance(declared.check, InContext) else declared.check
        schema[vol.Optional(declared.key or field.name)] = check
    return schema


def section_values(cls: type, section: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The dataclass's declared fields that a validated section sets (the others keep their
    defaults)."""
    values = {}
    for field, declared in _declared(cls):
        key = declared.key or field.name
        if declared.path:
            value = section.get(key, field.default)
            values[field.name] = folder / value if value else None
        elif key in section:
            value = section[key]
            values[field.name] = declared.read(value, folder) if declared.read is not None else value
    return values


def restart_only(cls: type) -> tuple[str, ...]:
    return tuple(field.name for field, declared in _declared(cls) if declared.restart)
