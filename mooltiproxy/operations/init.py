"""`mooltiproxy init`: a new folder made ready to serve, as the README's first command makes a clone:
config.yaml from the documented template, and a proxy key in `.proxy-key` (mode 0600) beside it.
Nothing that exists is overwritten."""

from __future__ import annotations

import os
import secrets
from importlib import resources
from pathlib import Path

KEY_FILE = ".proxy-key"


def init(config_path: Path) -> int:
    folder = config_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    if config_path.exists():
        print(f"{config_path} exists: kept as it is")
    else:
        template = resources.files("mooltiproxy.config").joinpath("config.template.yaml").read_text()
        config_path.write_text(template)
        print(f"wrote {config_path}, from the documented template: its targets are examples to edit")
    key_path = folder / KEY_FILE
    if key_path.exists():
        print(f"{key_path} exists: the proxy key kept as it is")
    else:
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
        print(f"wrote the proxy key in {key_path} (mode 0600)")
    print("next, to serve:")
    print(f'  MOOLTIPROXY_KEY="$(cat {key_path})" mooltiproxy --config {config_path}')
    return 0
