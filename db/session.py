"""Engine and sessions from MURMUR_DATABASE_URL, schema from Alembic."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import OperationalError

from workers.errors import MurmurError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def default_url() -> str:
    """SQLite in the user's data directory: the embedded runner needs no server."""
    home = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "murmur"
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'murmur.db'}"


# Workers and producers share one store of record; without MURMUR_DATABASE_URL they meet here.
DEFAULT_DISTRIBUTED_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/murmur"


def database_url() -> str:
    """The embedded runner's database: MURMUR_DATABASE_URL, else a local SQLite file."""
    return os.environ.get("MURMUR_DATABASE_URL") or default_url()


def distributed_database_url() -> str:
    """The workers' and producers' database: MURMUR_DATABASE_URL, else the local Postgres."""
    return os.environ.get("MURMUR_DATABASE_URL") or DEFAULT_DISTRIBUTED_URL


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; fewer fsyncs per job
    cursor.close()


def sessions(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url or database_url()), expire_on_commit=False)


def _alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine_for(url)
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply migrations; safe to run on every start."""
    command.upgrade(_alembic_config(url or database_url()), revision)


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
    head = ScriptDirectory.from_config(_alembic_config(url)).get_current_head()
    try:
        with engine_for(url).connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise MurmurError(f"cannot reach the database {make_url(url).render_as_string(hide_password=True)}: {exc.orig}") from None
    if current != head:
        raise MurmurError(f"the database is at revision {current or 'none'}, not {head}: run `murmur db upgrade`")
