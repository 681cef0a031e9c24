"""Faults an operator meets, on real services: a private redis-server of this test's own (flushed),
its own Postgres database, `murmur worker` processes it starts and stops.

Recovery here comes from Postgres alone: the visibility timeout stays at its hour-long default,
so every job that ends did so because leases lapsed or the reconciler re-drove it from its rows.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import select, text

from murmur.settings import get_settings
from murmur.tasks.client import Client
from murmur.workers.transcript import Segment
from tests.conftest import DATA, fresh_postgres, run_cli
from tests.test_distributed import Worker, _free_port, embedded  # noqa: F401 - embedded is a fixture

pytestmark = [pytest.mark.services, pytest.mark.weights]
DATABASE = "murmur_fault_test"
SETTINGS = {"MURMUR_LEASE_SECONDS": "6", "MURMUR_STALL_TIMEOUT": "10", "MURMUR_RECONCILE_INTERVAL": "2",
            "MURMUR_MAX_ATTEMPTS": "2"}


class PrivateRedis:
    """A redis-server of this test's own, keeping nothing on disk, like a cache restarted by its host."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir = _free_port(), workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)], stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Fleet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis = PrivateRedis(tmp)
        self.database_url = fresh_postgres(DATABASE, create=False)
        self.env = {**os.environ, **SETTINGS, "MURMUR_BROKER_URL": self.redis.url, "MURMUR_DATABASE_URL": self.database_url,
                    "MURMUR_ALLOWED_ROOTS": str(DATA), "MURMUR_DEVICE": "cpu"}
        assert run_cli("db", "upgrade", env=self.env).returncode == 0
        self.workers: list[Worker] = []
        self.started = 0

    def start(self, kind: str) -> Worker:
        self.started += 1
        worker = Worker(kind, self.env, self.tmp / f"{kind}-{self.started}.log")
        worker.wait_for(" ready.")
        self.workers.append(worker)
        return worker

    def stop(self, worker: Worker) -> None:
        worker.stop()
        self.workers.remove(worker)

    def of(self, kind: str) -> Worker:
        return next(w for w in self.workers if w.kind == kind)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    fleet = Fleet(tmp_path_factory.mktemp("faults"))
    saved = {k: os.environ.get(k) for k in SETTINGS}
    try:
        fleet.start("cpu")
        fleet.start("gpu")
        os.environ.update(SETTINGS)
        get_settings.cache_clear()
        fleet.client = Client(broker_url=fleet.redis.url, database_url=fleet.database_url)
        yield fleet
    finally:
        for worker in list(fleet.workers):
            fleet.stop(worker)
        fleet.redis.stop()
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        get_settings.cache_clear()


def _texts(client: Client, job_id: str) -> list[str]:
    return [s.text for s in client.result(job_id).segments]


def _wait_planned(client: Client, jobs: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while any(client.status(j).n_chunks is None for j in jobs):
        assert time.monotonic() < deadline, [client.status(j) for j in jobs]
        time.sleep(0.05)


FILES = [("jfk_inaugural_1961.flac", "en"), ("mls_spanish_13697_11991_000000.opus", "es"), ("stereo_two_speakers.wav", "en")]


def _no_duplicates(client: Client, job_id: str) -> None:
    with client.db() as s:
        positions = s.execute(select(Segment.chunk_idx, Segment.idx).where(Segment.job_id == job_id)).all()
    assert len(positions) == len(set(positions))


def test_redis_flushed_with_decode_messages_queued_every_job_ends_done(fleet, embedded):
    for name, language in FILES:
        embedded(name, language=language)  # the expected transcripts, before the fleet gets busy
    fleet.stop(fleet.of("gpu"))  # nobody consumes: the decode messages and tensors wait in Redis
    jobs = [fleet.client.submit(str(DATA / name), language=language) for name, language in FILES]
    _wait_planned(fleet.client, jobs)
    store = redis.Redis.from_url(fleet.redis.url)
    assert store.keys("murmur:feat:*") and sum(store.llen(k) for k in store.keys("murmur.gpu*")) >= len(jobs)
    store.flushall()  # every queued message and tensor is gone
    flushed = time.monotonic()
    fleet.start("gpu")
    for job_id, (name, language) in zip(jobs, FILES):
        fleet.client.wait(job_id, timeout=180)
        assert _texts(fleet.client, job_id) == [t.text for t in embedded(name, language=language).segments], name
        _no_duplicates(fleet.client, job_id)
        assert fleet.client.status(job_id).chunks_done == fleet.client.status(job_id).n_chunks
    assert time.monotonic() - flushed < 120
    with fleet.client.db() as s:
        assert all(a >= 1 for a in s.scalars(text("SELECT attempts FROM jobs WHERE id = ANY(:ids)"), {"ids": jobs}))
