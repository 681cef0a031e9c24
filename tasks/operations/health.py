"""`murmur health`: what a container's probe asks, answered in a few seconds.

The database and the broker must answer, and so must every worker started
on this machine (in a container: the container's own worker) to a ping over
the broker's control channel, which only its running consumer answers (a hung
consumer fails the probe, where a process check would pass). Workers say they
run here themselves (`fleet.presence`).
"""

from __future__ import annotations

from sqlalchemy import make_url

from murmur.db.session import check_schema
from murmur.settings import Settings
from murmur.tasks.fleet.app import app
from murmur.tasks.fleet.presence import workers_here
from murmur.workers.errors import MurmurError


def problems(settings: Settings, kind: str | None = None, timeout: float = 5.0) -> list[str]:
    """What is wrong, in words; empty when healthy."""
    found = []
    try:
        check_schema(settings.fleet_database_url)
    except MurmurError as exc:
        found.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure to answer is the answer
        shown = make_url(settings.fleet_database_url).render_as_string(hide_password=True)
        found.append(f"cannot reach the database {shown}: {type(exc).__name__}: {exc}")
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        return [*found, f"cannot reach the broker: {type(exc).__name__}: {exc}"]
    names = [name for name in workers_here() if not kind or name.startswith(f"{kind}-")]
    if kind and not names:
        return [*found, f"no {kind} worker runs here"]
    if names:
        answered = {name for reply in app.control.ping(destination=names, timeout=timeout) for name in reply}
        found += [f"worker {name} did not answer a ping within {timeout:g} s" for name in names if name not in answered]
    return found
