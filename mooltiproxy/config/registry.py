"""Finds mappers and prompters by name: the specs of the package's own fronts and backends, then
the plug-in folders `mappers/` and `prompters/`.

Every public function (or spec) defined in a module of a plug-in folder is registered under its own
name, so a user adds one by dropping a module there and naming the function in the YAML.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

from mooltiproxy.config.plugin_specs import MapperSpec, PrompterSpec


class RegistryError(Exception):
    pass


def discover(package_name: str, built_in: tuple[str, ...] = ()) -> dict[str, Any]:
    """The specs of the `built_in` packages (and their subpackages), then the plug-in package's specs
    and public functions, by name."""
    found: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name in built_in:
        package = importlib.import_module(name)
        for module_info in pkgutil.walk_packages(package.__path__, f"{name}."):
            module = importlib.import_module(module_info.name)
            for attribute, value in vars(module).items():
                if isinstance(value, SPECS) and value.function.__module__ == module.__name__:
                    _add(found, origins, attribute, value, module.__name__)
    try:
        package = importlib.import_module(package_name)
    except Exception as exc:  # a user module that fails to import must not become a traceback
        raise RegistryError(f"cannot import package '{package_name}': {exc}") from exc
    for module_info in pkgutil.iter_modules(package.__path__):
        if module_info.name.startswith("_"):
            continue
        module_name = f"{package_name}.{module_info.name}"
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise RegistryError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
        for attribute, value in vars(module).items():
            if not attribute.startswith("_") and _is_plugin(value, module_name):
                _add(found, origins, attribute, value, module_name)
    return found


SPECS = (MapperSpec, PrompterSpec)


def _is_plugin(value: Any, module_name: str) -> bool:
    if isinstance(value, SPECS):
        return value.function.__module__ == module_name
    # Helpers that take no payload cannot be mappers or prompters.
    return inspect.isfunction(value) and value.__module__ == module_name and positional_arity(value) >= 1


def _add(found: dict[str, Any], origins: dict[str, str], name: str, value: Any, module_name: str) -> None:
    if name in found:
        raise RegistryError(f"'{name}' is defined both in {origins[name]} and in {module_name}")
    found[name] = value
    origins[name] = module_name


def mapper_specs(found: dict[str, Any]) -> dict[str, MapperSpec]:
    """Each found mapper's spec; a plain function's declares nothing."""
    return {name: value if isinstance(value, MapperSpec) else MapperSpec(value) for name, value in found.items()}


def prompter_specs(found: dict[str, Any]) -> dict[str, PrompterSpec]:
    return {name: value if isinstance(value, PrompterSpec) else PrompterSpec(value) for name, value in found.items()}


def positional_arity(function: Callable) -> int:
    """How many positional arguments the function accepts (a large number for *args)."""
    count = 0
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            return 1 << 16
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count
