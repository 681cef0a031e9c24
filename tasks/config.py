"""Settings read from the environment that more than one module needs parsed the same way."""

from __future__ import annotations

import os

from workers.errors import MurmurError


def env_seconds(name: str, default: int) -> int:
    """A positive whole number of seconds from `name`, or `default` when unset."""
    value = os.environ.get(name, str(default))
    if not value.isdigit() or int(value) < 1:
        raise MurmurError(f"{name} must be a whole number of seconds, not {value!r}")
    return int(value)
