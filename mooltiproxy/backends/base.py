"""What a backend is: one kind of target server, as the proxy reads it beyond its mappers' answers."""

from __future__ import annotations

from typing import Any, ClassVar

from mooltiproxy.config.settings import TargetInfo


class Backend:
    """A target kind: where it says what model it serves and how long a context it takes."""

    name: ClassVar[str]
    info_path: ClassVar[str]  # asked with GET at start; a target is asked each backend's path in turn

    @staticmethod
    def read_info(body: Any) -> TargetInfo | None:
        """What the JSON answer at `info_path` says; None when it is not this backend's answer."""
        raise NotImplementedError
