"""Engines and sessions for a database URL; the schema from Alembic.

Alembic is imported only by the functions that migrate or check the schema,
so a producer that merely reads a job's status does not load it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from murmur.workers.errors import MurmurError

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0011"  # the newest migration's revision: a database there is used without loading Alembic (a test checks it)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        _private_file(Path(make_url(url).database))
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # 20 kept: a burst of API requests (or a GPU worker's threads) would otherwise open and close
    # Postgres connections, each a server process forked and torn down
    return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=20)


def _private_file(path: Path) -> None:
    """A new SQLite file is created readable by its user alone, in a folder of its own: transcripts and
    sources are in it (SQLite gives its -wal and -shm files the database's own permissions)."""
    if path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; fewer fsyncs per job
    cursor.close()


def sessions(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


def _alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine_for(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations; safe to run on every start, and cheap when there is nothing to do."""
    if revision == "head" and current_revision(url) == HEAD:
        return
    from alembic import command

    command.upgrade(_alembic_config(url), revision)


def create_database(url: str) -> bool:
    """Create a Postgres database that does not exist yet; True if it was created."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql") or not parsed.database:
        return False
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}).first():
                return False
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
            return True
    finally:
        admin.dispose()


def check_schema(url: str) -> None:
    """Fail fast, with the fix, when a worker starts against an unmigrated database."""
    try:
        current = current_revision(url)
    except OperationalError as exc:
        raise MurmurError(f"cannot reach the database {make_url(url).render_as_string(hide_password=True)}: {exc.orig}") from None
    if current != HEAD:
        raise MurmurError(f"the database is at revision {current or 'none'}, not {HEAD}: run `murmur db upgrade`")


def current_revision(url: str) -> str | None:
    """The schema revision Alembic recorded in the database; None for a database it never migrated."""
    with engine_for(url).connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
