"""`murmur health`: what a container's probe asks, answered in a few seconds.

The database and the broker must answer; given a worker kind, a worker of
that kind on this host must answer a ping over the broker's control channel,
which only its running consumer does (a hung consumer fails the probe, where
a process check would pass).
"""

from __future__ import annotations

import socket

from sqlalchemy import make_url

from murmur.settings import Settings
from murmur.workers.errors import MurmurError


def problems(settings: Settings, kind: str | None = None, timeout: float = 5.0) -> list[str]:
    """What is wrong, in words; empty when healthy."""
    found = []
    try:
        from murmur.db.session import check_schema

        check_schema(settings.fleet_database_url)
    except MurmurError as exc:
        found.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure to answer is the answer
        shown = make_url(settings.fleet_database_url).render_as_string(hide_password=True)
        found.append(f"cannot reach the database {shown}: {type(exc).__name__}: {exc}")
    from murmur.tasks.app import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        return [*found, f"cannot reach the broker: {type(exc).__name__}: {exc}"]
    if kind:
        here = f"@{socket.gethostname()}"
        replies = app.control.ping(timeout=timeout)
        names = [name for reply in replies for name in reply]
        if not any(name.startswith(f"{kind}-") and name.endswith(here) for name in names):
            found.append(f"no {kind} worker on {here[1:]} answered a ping within {timeout:g} s "
                         f"(answered: {', '.join(sorted(names)) or 'none'})")
    return found
