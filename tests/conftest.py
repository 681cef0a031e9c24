"""Shared fixtures: real audio from tests/data, the real bundled models, real databases."""

from __future__ import annotations

import os
import re
import socket
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


SERVICE_PORTS = {5432: "Postgres", 6379: "Redis", 5672: "RabbitMQ"}
SERVICE_PROGRAMS = ("redis-server", "murmur worker", "murmur serve", "murmur exporter")


@pytest.fixture(autouse=True)
def _marks_tell_the_truth(request, monkeypatch):
    """A test that reaches the machine's services or starts workers must be marked `services`, and one
    that loads Whisper weights `weights`: unmarked, it fails here, so `-m "not services"` means it."""
    marks = {mark.name for mark in request.node.iter_markers()}
    if "services" not in marks:
        connect = socket.socket.connect

        def no_services(self, address):
            if isinstance(address, tuple) and address[1] in SERVICE_PORTS:
                raise AssertionError(f"reaches {SERVICE_PORTS[address[1]]}: mark the test `services`")
            return connect(self, address)

        def no_postgres(*args, **kwargs):
            raise AssertionError("reaches Postgres: mark the test `services`")

        popen = subprocess.Popen.__init__

        def no_workers(self, args, *rest, **kwargs):
            line = " ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args)
            if any(program in line for program in SERVICE_PROGRAMS):
                raise AssertionError(f"starts {line[:80]}: mark the test `services`")
            popen(self, args, *rest, **kwargs)

        import psycopg

        monkeypatch.setattr(socket.socket, "connect", no_services)
        monkeypatch.setattr(psycopg, "connect", no_postgres)
        monkeypatch.setattr(subprocess.Popen, "__init__", no_workers)
    if "weights" not in marks:
        import ctranslate2

        def no_weights(*args, **kwargs):
            raise AssertionError("loads Whisper weights: mark the test `weights`")

        monkeypatch.setattr(ctranslate2.models, "Whisper", no_weights)


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
