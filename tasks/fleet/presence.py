"""Which workers run on this machine: each `murmur worker` leaves a file named by its PID while it lives.

`murmur health` reads them to know whom to ping; importing this module loads
nothing of the fleet, so a container's probe starts quickly.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

RUN_DIR = Path(tempfile.gettempdir()) / "murmur-workers"


def register(name: str) -> None:
    """Say that worker `name` runs in this process, until it exits."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    mine = RUN_DIR / str(os.getpid())
    mine.write_text(name)
    atexit.register(mine.unlink, missing_ok=True)


def workers_here() -> list[str]:
    """The names of the workers whose processes live on this machine."""
    names = []
    for entry in RUN_DIR.glob("*") if RUN_DIR.is_dir() else ():
        try:
            os.kill(int(entry.name), 0)
        except ProcessLookupError:
            entry.unlink(missing_ok=True)  # a worker that was killed
            continue
        except (ValueError, PermissionError):
            pass  # another user's worker: it lives
        names.append(entry.read_text().strip())
    return sorted(names)
