"""Finds mapper and prompter functions by name in the `mappers/` and `prompters/` packages.

Every public function defined in a module of the package is registered under its own name,
so a user adds one by dropping a module there and naming the function in the YAML.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable


class RegistryError(Exception):
    pass


def discover(package_name: str) -> dict[str, Callable]:
    """Imports every module of the package and returns its public functions by name."""
    try:
        package = importlib.import_module(package_name)
    except Exception as exc:  # a user module that fails to import must not become a traceback
        raise RegistryError(f"cannot import package '{package_name}': {exc}") from exc
    functions: dict[str, Callable] = {}
    origins: dict[str, str] = {}
    for module_info in pkgutil.iter_modules(package.__path__):
        if module_info.name.startswith("_"):
            continue
        module_name = f"{package_name}.{module_info.name}"
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise RegistryError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
        for name, function in inspect.getmembers(module, inspect.isfunction):
            # Helpers that take no payload cannot be mappers or prompters.
            if name.startswith("_") or function.__module__ != module_name or positional_arity(function) < 1:
                continue
            if name in functions:
                raise RegistryError(f"'{name}' is defined both in {origins[name]} and in {module_name}")
            functions[name] = function
            origins[name] = module_name
    return functions


def positional_arity(function: Callable) -> int:
    """How many positional arguments the function accepts (a large number for *args)."""
    count = 0
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            return 1 << 16
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count
