"""Shared fixtures: real audio from tests/data, the real bundled models, real databases."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
POSTGRES_ADMIN_URL = os.environ.get("MURMUR_TEST_POSTGRES_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
POSTGRES_TEST_DB = "murmur_test"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words / reference length (plain, for bounds in tests)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_data():
    """The default SQLite file goes to a temporary directory, for this process and the
    `murmur` processes the tests start; the reassembled base model stays in the user's
    cache (MURMUR_CACHE_DIR), shared by every run."""
    from murmur.settings import get_settings

    with tempfile.TemporaryDirectory(prefix="murmur-data-") as home:
        os.environ["XDG_DATA_HOME"] = home
        os.environ.pop("MURMUR_DATABASE_URL", None)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def base_model():
    from murmur.workers.gpu.model import load_model

    return load_model("base", "cpu", "int8", 2)


@pytest.fixture(scope="session")
def tiny_en_model():
    from murmur.workers.gpu.model import load_model

    return load_model("tiny.en", "cpu", "int8", 2)


@pytest.fixture()
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'murmur.db'}"


def fresh_postgres(name: str, create: bool = True) -> str:
    """The URL of database `name` on the machine's real Postgres, dropped first (and created again)."""
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        if create:
            conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A fresh database on the machine's real Postgres."""
    return fresh_postgres(POSTGRES_TEST_DB)


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The installed `murmur` console script of this environment, as a user runs it."""
    script = Path(sys.executable).parent / "murmur"
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=full_env, timeout=timeout)
