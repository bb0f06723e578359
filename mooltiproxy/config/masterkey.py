"""Chooses the proxy's master key: the MOOLTIPROXY_KEY environment variable, else system.masterkey."""

from __future__ import annotations

from collections.abc import Mapping

from mooltiproxy.core.errors import ConfigError

MASTER_KEY_ENV = "MOOLTIPROXY_KEY"
SHORT_KEY_LENGTH = 16


def resolve_master_key(from_config: str | None, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Returns the key and the warnings to show at start; raises ConfigError when none is usable."""
    from_env = environ.get(MASTER_KEY_ENV) or None
    warnings = []
    if from_env and from_config:
        warnings.append(f"{MASTER_KEY_ENV} is set and wins over system.masterkey from the config file")
    elif from_config:
        warnings.append(
            "SECURITY: the proxy key is read from system.masterkey in the config file; "
            f"remove it from there and set the {MASTER_KEY_ENV} environment variable instead"
        )
    key = from_env or from_config
    source = MASTER_KEY_ENV if from_env else "system.masterkey"
    if not key:
        raise ConfigError([f"no proxy key: set the {MASTER_KEY_ENV} environment variable to a long random secret"])
    if len(set(key)) == 1:
        raise ConfigError([f"{source}: the proxy key is a placeholder (one repeated character); set a real secret"])
    if len(key) < SHORT_KEY_LENGTH:
        warnings.append(f"{source}: the proxy key is shorter than {SHORT_KEY_LENGTH} characters")
    return key, warnings
