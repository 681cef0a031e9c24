"""Engine and sessions from MURMUR_DATABASE_URL, schema from Alembic."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def default_url() -> str:
    """SQLite in the user's data directory: the embedded runner needs no server."""
    home = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "murmur"
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'murmur.db'}"


def database_url() -> str:
    return os.environ.get("MURMUR_DATABASE_URL") or default_url()


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; fewer fsyncs per job
    cursor.close()


def sessions(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url or database_url()), expire_on_commit=False)


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply migrations; safe to run on every start."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine_for(url or database_url())
    command.upgrade(config, revision)
