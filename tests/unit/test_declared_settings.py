"""Each setting declared once: the schema, the values and the restart-only list read from the
settings dataclasses, with the field's default for what the YAML leaves out."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import voluptuous as vol

from mooltiproxy.config.checks import CheckContext
from mooltiproxy.config.declared import restart_only, section_schema, section_values
from mooltiproxy.config.settings import NO_LIMITS, GuardSettings, Limits, SystemSettings, Target

FOLDER = Path("/etc/mooltiproxy")
CONTEXT = CheckContext({"REDIS_PASSWORD": "secret"}, FOLDER)


def read(cls: type, section: dict) -> dict:
    return section_values(cls, vol.Schema(section_schema(cls, CONTEXT))(section), FOLDER)


def test_what_the_yaml_leaves_out_keeps_the_fields_default_and_paths_start_from_the_config():
    system = SystemSettings(**read(SystemSettings, {}))
    defaults = SystemSettings()
    assert (system.port, system.timeout, system.state) == (defaults.port, defaults.timeout, None)
    assert system.certfile == FOLDER / "certificates" / "cert.pem"
    assert system.admin_socket == FOLDER / "run" / "mooltiproxy.sock"


def test_yaml_values_are_checked_and_read():
    system = SystemSettings(
        **read(
            SystemSettings,
            {"port": 9000, "state": "state.db", "admin_socket": None, "limits_when_store_down": "closed"},
        )
    )
    assert (system.port, system.state, system.admin_socket) == (9000, str(FOLDER / "state.db"), None)
    assert system.limits_fail_closed
    with pytest.raises(vol.MultipleInvalid, match="expected an integer >= 0 and <= 65535"):
        read(SystemSettings, {"port": 70000})
    with pytest.raises(vol.MultipleInvalid, match="environment variable 'NOPE' is not set"):
        read(SystemSettings, {"state_envkey": "NOPE"})


def test_keys_of_the_original_format_and_renamed_ones_are_read():
    guard = GuardSettings(**read(GuardSettings, {"limits": {"requests_per_minute": 5}, "whitelist": ["10.0.0.0/8"]}))
    assert guard.default_limits == Limits(requests_per_minute=5) and guard.master_limits is NO_LIMITS
    assert len(guard.whitelist.networks) == 1
    target = read(Target, {"preserveMethod": True, "limits": None})
    assert target == {"preserve_method": True, "limits": NO_LIMITS}


def test_every_declared_setting_has_a_default_and_the_restart_only_ones_are_marked():
    for cls in (SystemSettings, GuardSettings):
        for field in dataclasses.fields(cls):
            assert field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    assert {"host", "port", "workers", "state", "admin_socket"} <= set(restart_only(SystemSettings))
    assert "timeout" not in restart_only(SystemSettings)
    assert restart_only(GuardSettings) == ("ban_file",)
