"""Finds mappers and prompters by name: the specs the package's fronts and backends declare, then
the plug-in folders' (`<system.plugins>/mappers/` and `<system.plugins>/prompters/`).

Every public function (or spec) defined in a `.py` module of a plug-in folder is registered under its
own name, so an operator adds one by dropping a module there and naming the function in the YAML;
nothing is ever written into the installed package.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from mooltiproxy.config.plugin_specs import MapperSpec, PrompterSpec

# Where the package declares its own: read by name, since they sit in layers above the configuration.
BUILT_IN = ("mooltiproxy.fronts", "mooltiproxy.backends")

Spec = TypeVar("Spec", MapperSpec, PrompterSpec)


class RegistryError(Exception):
    pass


def _identity(payload: Any, endpoint: Any = None) -> Any:
    """The pass-through mapper: a route with it on both sides relays bytes, never parsed."""
    return payload


def find_mappers(plugins: Path) -> dict[str, MapperSpec]:
    return _find(MapperSpec, plugins / "mappers", {"identity": MapperSpec(_identity)})


def find_prompters(plugins: Path) -> dict[str, PrompterSpec]:
    return _find(PrompterSpec, plugins / "prompters", {})


def _find(kind: type[Spec], folder: Path, found: dict[str, Spec]) -> dict[str, Spec]:
    origins = dict.fromkeys(found, "the proxy")
    for name in BUILT_IN:
        package = importlib.import_module(name)
        for module_info in pkgutil.walk_packages(package.__path__, f"{name}."):
            module = importlib.import_module(module_info.name)
            for attribute, value in vars(module).items():
                if isinstance(value, kind) and value.function.__module__ == module.__name__:
                    _add(found, origins, attribute, value, module.__name__)
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else ():
        if path.name.startswith("_"):
            continue
        module = _load(path, f"{folder.name}.{path.stem}")
        for attribute, value in vars(module).items():
            spec = None if attribute.startswith("_") else _plugin_spec(kind, value, module.__name__)
            if spec is not None:
                _add(found, origins, attribute, spec, f"{folder.name}/{path.name}")
    return found


def _load(path: Path, name: str) -> ModuleType:
    """A plug-in module, imported from its file; one that fails to import is a RegistryError."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RegistryError(f"cannot import {name}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user module that fails to import must not become a traceback
        del sys.modules[name]
        raise RegistryError(f"cannot import {name}: {type(exc).__name__}: {exc}") from exc
    return module


def _plugin_spec(kind: type[Spec], value: Any, module_name: str) -> Spec | None:
    """The spec of what a plug-in module defines: a decorated function's own, a plain public
    function's that declares nothing; None for anything else (imports, helpers that take no payload)."""
    if isinstance(value, kind):
        return value if value.function.__module__ == module_name else None
    if inspect.isfunction(value) and value.__module__ == module_name and positional_arity(value) >= 1:
        return kind(value)
    return None


def _add(found: dict[str, Spec], origins: dict[str, str], name: str, value: Spec, origin: str) -> None:
    if name in found:
        raise RegistryError(f"'{name}' is defined both in {origins[name]} and in {origin}")
    found[name] = value
    origins[name] = origin


def positional_arity(function: Callable) -> int:
    """How many positional arguments the function accepts (a large number for *args)."""
    count = 0
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            return 1 << 16
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count
