"""Faults an operator meets, on real services: a private redis-server of this test's own (flushed),
its own Postgres database, `murmur worker` processes it starts and stops.

Recovery here comes from Postgres alone: the visibility timeout stays at its hour-long default,
so every job that ends did so because leases lapsed or the reconciler re-drove it from its rows.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, func, select, text

from murmur.db import queries
from murmur.settings import get_settings
from murmur.tasks import stages
from murmur.tasks.context import Context
from murmur.tasks.fleet.client import Client, JobFailed
from murmur.tasks.fleet.queues import CPU_QUEUE, GPU_QUEUE, priority_keys
from murmur.tasks.tensors.redis import RedisTensorStore
from murmur.workers.options import JobOptions
from murmur.workers.transcript import Segment
from tests.conftest import DATA, POSTGRES_ADMIN_URL, fresh_postgres, run_cli, word_error_rate, words
from tests.test_distributed import Worker, _free_port, embedded  # noqa: F401 - embedded is a fixture

pytestmark = [pytest.mark.services, pytest.mark.weights]
DATABASE = "murmur_fault_test"
SETTINGS = {"MURMUR_LEASE_SECONDS": "6", "MURMUR_STALL_TIMEOUT": "10", "MURMUR_RECONCILE_INTERVAL": "2",
            "MURMUR_MAX_ATTEMPTS": "2", "MURMUR_CALLBACK_ALLOW": "127.0.0.1", "MURMUR_CALLBACK_DEADLINE": "20"}
CHUNK_BYTES = 80 * 3000 * 4  # one chunk's log-mel features in Redis


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

    def start(self, kind: str, **settings: str) -> Worker:
        self.started += 1
        worker = Worker(kind, {**self.env, **settings}, self.tmp / f"{kind}-{self.started}.log")
        worker.wait_for(" ready.")
        self.workers.append(worker)
        return worker

    def stop(self, worker: Worker) -> None:
        worker.stop()
        self.workers.remove(worker)

    def kill(self, worker: Worker) -> None:
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait()
        worker.stop()  # closes its log
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
    return _texts_of(client.result(job_id))


def _assert_transcribed(client: Client, job_id: str, expected: list[str], name: str = "") -> None:
    """The job's transcript says what the embedded runner's does: no chunk lost, none stored twice.

    Words, not punctuation, and not to the word: a short chunk may have shared a
    Whisper window with another job's (MURMUR_PACK_WINDOWS), which can move a
    comma or change a word. A lost or doubled chunk costs far more than 5%.
    """
    got = _texts(client, job_id)
    assert word_error_rate(" ".join(expected), " ".join(got)) <= 0.05, (name, got, expected)
    assert bool(got) == bool(expected), name


def _texts_of(transcript) -> list[str]:
    return [s.text for s in transcript.segments]


def _wait_until(client: Client, jobs: list[str], reached, timeout: float = 120) -> None:
    """Poll the jobs' statuses until `reached(statuses)` holds."""
    deadline = time.monotonic() + timeout
    while not reached(statuses := [client.status(j) for j in jobs]):
        assert time.monotonic() < deadline, statuses
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
    _wait_until(fleet.client, jobs, lambda statuses: all(st.n_chunks is not None for st in statuses))
    store = redis.Redis.from_url(fleet.redis.url)
    deadline = time.monotonic() + 30  # a job is planned just before its messages are sent
    while sum(store.llen(k) for k in store.keys("murmur.gpu*")) < len(jobs):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert store.keys("murmur:feat:*")
    store.flushall()  # every queued message and tensor is gone
    flushed = time.monotonic()
    fleet.start("gpu")
    for job_id, (name, language) in zip(jobs, FILES):
        fleet.client.wait(job_id, timeout=180)
        _assert_transcribed(fleet.client, job_id, _texts_of(embedded(name, language=language)), name)
        _no_duplicates(fleet.client, job_id)
        assert fleet.client.status(job_id).chunks_done == fleet.client.status(job_id).n_chunks
    assert time.monotonic() - flushed < 120
    with fleet.client.db() as s:
        assert all(a >= 1 for a in s.scalars(text("SELECT attempts FROM jobs WHERE id = ANY(:ids)"), {"ids": jobs}))


def test_redis_restarted_mid_run_every_job_ends_done(fleet, embedded):
    expected = {name: _texts_of(embedded(name, language=language)) for name, language in FILES}
    jobs = [fleet.client.submit(str(DATA / name), language=language) for name, language in FILES]
    _wait_until(fleet.client, jobs, lambda statuses: any(st.chunks_done for st in statuses))
    fleet.redis.stop()  # a Redis that keeps nothing on disk, restarted by its host mid-decode
    fleet.redis.start()
    restarted = time.monotonic()
    for job_id, (name, _) in zip(jobs, FILES):
        fleet.client.wait(job_id, timeout=180)
        _assert_transcribed(fleet.client, job_id, expected[name], name)
        _no_duplicates(fleet.client, job_id)
    assert time.monotonic() - restarted < 150
    # the same worker processes go on consuming: a job submitted now is transcribed by them
    pids = {w.proc.pid for w in fleet.workers}
    after = fleet.client.submit(str(DATA / "jfk_inaugural_1961.flac"), language="en")
    fleet.client.wait(after, timeout=60)
    _assert_transcribed(fleet.client, after, expected["jfk_inaugural_1961.flac"])
    assert {w.proc.pid for w in fleet.workers} == pids and all(w.proc.poll() is None for w in fleet.workers)


def test_lost_messages_are_re_driven_while_a_stream_of_jobs_keeps_both_queues_busy(fleet, embedded):
    """A stream of short jobs (priority 9) keeps both queues holding messages throughout. Two urgent jobs
    lose their messages: one's producer died after its insert (no prepare message), the other's decode
    messages were never sent (it is prepared in this process). Each is re-driven within about twice the
    stall timeout, though its queue never empties, and ends done with its words; no job of the stream,
    only waiting its turn, is sent twice."""
    expected = _texts_of(embedded("jfk_inaugural_1961.flac", language="en"))
    client, jfk = fleet.client, str(DATA / "jfk_inaugural_1961.flac")
    queues = redis.Redis.from_url(fleet.redis.url)

    def waiting(queue: str) -> int:
        return sum(queues.llen(key) for key in priority_keys(queue))

    stream, stop = [], threading.Event()

    def produce() -> None:  # whenever a queue runs low, more work: it never empties while the test watches
        while not stop.is_set():
            if min(waiting(CPU_QUEUE), waiting(GPU_QUEUE)) < 20:
                stream.extend(client.submit(jfk, language="en", priority=9) for _ in range(10))
            stop.wait(0.2)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        # a margin in both before the messages are lost: the decoders drain a short queue in a moment
        _wait_until(client, [], lambda _: min(waiting(CPU_QUEUE), waiting(GPU_QUEUE)) >= 15)
        options = JobOptions(language="en").to_json()
        no_prepare = queries.create_job(client.db, jfk, options, priority=0)
        no_decode = queries.create_job(client.db, jfk, options, priority=0)
        ctx = Context.from_settings(get_settings(), client.db, store=RedisTensorStore(fleet.redis.url, 3600))
        assert stages.prepare(ctx, no_decode)  # planned, its features in Redis: its decode messages are lost
        lost_at = time.monotonic()
        redriven: dict[str, float] = {}
        busy = []  # both queues' lengths, sampled until both jobs are re-driven
        deadline = lost_at + 120
        while len(redriven) < 2:
            busy.append((waiting(CPU_QUEUE), waiting(GPU_QUEUE)))
            for job_id in (no_prepare, no_decode):
                if job_id not in redriven and queries.get_job(client.db, job_id).attempts:
                    redriven[job_id] = time.monotonic() - lost_at
            assert time.monotonic() < deadline, f"not re-driven while the queues stayed busy: {redriven}"
            time.sleep(0.2)
        for job_id in (no_prepare, no_decode):
            client.wait(job_id, timeout=120)
            _assert_transcribed(client, job_id, expected)
        with client.db() as s:
            sent_twice = s.scalar(text("SELECT (SELECT coalesce(sum(attempts), 0) FROM jobs WHERE id = ANY(:ids)) "
                                       "+ (SELECT coalesce(sum(attempts), 0) FROM chunks WHERE job_id = ANY(:ids))"),
                                  {"ids": stream})
    finally:
        stop.set()
        producer.join()
        for job_id in stream:  # the stream's work is skipped, so the fleet is quiet for the next test
            queries.cancel_job(client.db, job_id)
    stall = int(SETTINGS["MURMUR_STALL_TIMEOUT"])
    assert min(min(pair) for pair in busy) > 0, "a queue emptied: the test did not hold them busy"
    assert max(redriven.values()) <= 2 * stall + 2 * int(SETTINGS["MURMUR_RECONCILE_INTERVAL"]), redriven
    assert len(stream) >= 20 and sent_twice == 0  # the stream waited its turn: nothing of it was re-sent
    _wait_until(client, [], lambda _: waiting(CPU_QUEUE) == 0 and waiting(GPU_QUEUE) == 0)


def _in_prepare(client: Client, job_id: str, deadline: float, not_by: str | None = None) -> str | None:
    """Wait until a worker (not `not_by`) holds the job's lease and has not planned it yet: that
    worker's lease holder; None once the job failed."""
    while True:
        job = queries.get_job(client.db, job_id)
        if job.status == "failed":
            return None
        if job.lease_worker not in (None, not_by) and job.n_chunks is None:
            return job.lease_worker
        assert time.monotonic() < deadline, job
        time.sleep(0.01)


def test_a_cpu_worker_killed_mid_prepare_is_replaced_within_a_minute(fleet, embedded):
    expected = _texts_of(embedded("en_5min.flac", language="en"))
    job_id = fleet.client.submit(str(DATA / "en_5min.flac"), language="en")
    assert _in_prepare(fleet.client, job_id, time.monotonic() + 60)
    fleet.kill(fleet.of("cpu"))
    killed = time.monotonic()
    fleet.start("cpu")  # its replacement (and the fleet's reconciler); the message itself stays unacked for an hour
    _wait_until(fleet.client, [job_id], lambda statuses: statuses[0].n_chunks is not None)
    replanned = time.monotonic() - killed
    fleet.client.wait(job_id, timeout=300)
    assert replanned < 60, replanned
    _assert_transcribed(fleet.client, job_id, expected)
    _no_duplicates(fleet.client, job_id)
    assert queries.get_job(fleet.client.db, job_id).attempts == 1


def test_gpu_workers_killed_while_detecting_and_while_decoding_the_voters_lose_nothing(fleet, embedded):
    """The language vote is the job's first batch: kill its GPU worker while it encodes the voters, then
    the next one once the language is recorded and it decodes them; the job still ends with every chunk once."""
    expected = _texts_of(embedded("en_5min.flac", language="en"))
    client = fleet.client
    job_id = client.submit(str(DATA / "en_5min.flac"))

    def reached(test, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while not test(job := queries.get_job(client.db, job_id)):
            assert time.monotonic() < deadline, job
            time.sleep(0.01)
        return job

    reached(lambda job: job.n_chunks is not None and job.language is None and job.lease_worker is not None)
    fleet.kill(fleet.of("gpu"))  # mid-detection: its lease lapses and the reconciler sends detection again
    fleet.start("gpu")
    job = reached(lambda job: job.language is not None)
    assert job.language == "en" and job.chunks_done == 0
    fleet.kill(fleet.of("gpu"))  # the voters were leased to it, in its batcher
    fleet.start("gpu")
    status = client.wait(job_id, timeout=300)
    assert status.chunks_done == status.n_chunks and status.language == "en"
    _assert_transcribed(client, job_id, expected)
    _no_duplicates(client, job_id)


def test_a_file_that_kills_its_worker_every_time_fails_after_max_attempts(fleet):
    """The test plays the poison: whenever a CPU worker starts preparing this job, it dies."""
    good = fleet.client.submit(str(DATA / "stereo_two_speakers.wav"), language="en")
    fleet.client.wait(good, timeout=120)
    poison = fleet.client.submit(str(DATA / "jfk_inaugural_1961.flac"), language="en")
    kills = 0
    deadline = time.monotonic() + 300
    holder = None
    while holder := _in_prepare(fleet.client, poison, deadline, not_by=holder):
        fleet.kill(fleet.of("cpu"))
        kills += 1
        fleet.start("cpu")
    tries = int(SETTINGS["MURMUR_MAX_ATTEMPTS"]) + 1  # the first run and each re-drive
    with pytest.raises(JobFailed, match=rf"gave up after {tries} tries \(MURMUR_MAX_ATTEMPTS\): its worker cpu-\d+@\S+ stopped during prepare"):
        fleet.client.wait(poison, timeout=5)
    assert kills == tries
    assert fleet.client.status(good).status == "done"
    after = fleet.client.submit(str(DATA / "stereo_two_speakers.wav"), language="en")
    fleet.client.wait(after, timeout=120)  # the fleet goes on
    assert "curtain" in words(fleet.client.result(after).text)


def test_postgres_unreachable_for_two_minutes_mid_decode(fleet, embedded):
    names = ("en_5min.flac", "jfk_inaugural_1961.flac")
    expected = {name: _texts_of(embedded(name, language="en")) for name in names}
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    jobs = [fleet.client.submit(str(DATA / name), language="en") for name in names]
    _wait_until(fleet.client, jobs[:1], lambda statuses: statuses[0].chunks_done >= 1, timeout=180)
    assert fleet.client.status(jobs[0]).status == "running"
    fleet.client.db.kw["bind"].dispose()
    try:  # only this test's database is blocked; the server and every other database stay up
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {DATABASE} ALLOW_CONNECTIONS false"))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": DATABASE})
        time.sleep(120)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {DATABASE} ALLOW_CONNECTIONS true"))
        admin.dispose()
    for job_id, name in zip(jobs, names):
        fleet.client.wait(job_id, timeout=300)
        _assert_transcribed(fleet.client, job_id, expected[name], name)
        _no_duplicates(fleet.client, job_id)
    with fleet.client.db() as s:
        stored = s.scalar(select(func.count()).select_from(Segment).where(Segment.job_id == jobs[0]))
    assert stored == len(_texts(fleet.client, jobs[0]))  # no segment row stored twice
    assert all(w.proc.poll() is None for w in fleet.workers)


def test_a_redis_that_refuses_writes_for_a_while_costs_no_job(fleet, embedded):
    """A full Redis under `noeviction`, for a few seconds twice: while the job is prepared (tensor
    writes and publishes fail) and while it is decoded (the acknowledgements fail)."""
    expected = _texts_of(embedded("en_5min.flac", language="en"))
    job_id = fleet.client.submit(str(DATA / "en_5min.flac"), language="en")
    broker = redis.Redis.from_url(fleet.redis.url)
    broker.config_set("maxmemory-policy", "noeviction")

    def refuse_writes(seconds: float) -> None:
        broker.config_set("maxmemory", "1")  # below what it holds: writes are refused ("OOM command not allowed")
        try:
            time.sleep(seconds)
        finally:
            broker.config_set("maxmemory", "0")

    assert _in_prepare(fleet.client, job_id, time.monotonic() + 60)
    refuse_writes(4)
    _wait_until(fleet.client, [job_id], lambda statuses: statuses[0].chunks_done >= 1, timeout=180)
    refuse_writes(4)  # each decode takes about 2 s here: some finish inside the window
    fleet.client.wait(job_id, timeout=240)
    _assert_transcribed(fleet.client, job_id, expected)
    _no_duplicates(fleet.client, job_id)
    assert all(w.proc.poll() is None for w in fleet.workers)


def test_prepare_waits_for_room_in_redis_and_no_job_fails_for_it(fleet, embedded):
    """Backpressure: with no GPU worker draining Redis and a tensor budget of three chunks above
    what Redis holds, a burst waits in prepare (as long as it takes: nothing fails, the reconciler
    leaves it alone) and is transcribed once a GPU worker is back. The first job alone is larger
    than the budget: its own tensors do not count against it, or it would wait for itself forever."""
    expected = {name: _texts_of(embedded(name, language=language)) for name, language in [*FILES, ("en_5min.flac", "en")]}
    fleet.stop(fleet.of("gpu"))
    fleet.stop(fleet.of("cpu"))
    store = redis.Redis.from_url(fleet.redis.url)
    budget = store.info("memory")["used_memory"] + 3 * CHUNK_BYTES
    cpu = fleet.start("cpu", MURMUR_TENSOR_BUDGET=str(budget))
    try:
        big = fleet.client.submit(str(DATA / "en_5min.flac"), language="en")
        _wait_until(fleet.client, [big], lambda statuses: statuses[0].n_chunks is not None)
        n_chunks = fleet.client.status(big).n_chunks
        assert n_chunks * CHUNK_BYTES > 3 * CHUNK_BYTES  # planned although its tensors alone exceed the budget
        burst = [fleet.client.submit(str(DATA / name), language=language) for name, language in FILES * 2]
        cpu.wait_for("prepare waits for decode to drain it", timeout=60)
        time.sleep(2 * int(SETTINGS["MURMUR_STALL_TIMEOUT"]))  # well past the stall timeout: still waiting, not failed
        statuses = [fleet.client.status(j) for j in burst]
        assert all(st.status in ("queued", "running") and st.n_chunks is None for st in statuses), statuses
        tensors = [key.decode() for key in store.keys("murmur:feat:*")]
        assert sum(big in key for key in tensors) == n_chunks
        assert not [key for key in tensors if any(job_id in key for job_id in burst)]  # the burst put none
        with fleet.client.db() as s:
            assert s.scalar(text("SELECT max(attempts) FROM jobs WHERE id = ANY(:ids)"), {"ids": [big, *burst]}) == 0
        fleet.start("gpu")
        fleet.client.wait(big, timeout=240)
        _assert_transcribed(fleet.client, big, expected["en_5min.flac"])
        for job_id, (name, _) in zip(burst, FILES * 2):
            fleet.client.wait(job_id, timeout=120)
            _assert_transcribed(fleet.client, job_id, expected[name], name)
    finally:
        fleet.stop(cpu)
        fleet.start("cpu")
        if not any(w.kind == "gpu" for w in fleet.workers):
            fleet.start("gpu")


class _Drip(threading.Thread):
    """A webhook server that answers one byte every half second, for ever: it would hold whatever
    thread sends to it. Counts the connections it holds open."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.open = 0
        self.lock = threading.Lock()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with self.lock:
            self.open += 1
        try:
            conn.recv(65536)
            for byte in iter(lambda: b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000, None):
                for i in range(len(byte)):
                    conn.sendall(byte[i:i + 1])
                    time.sleep(0.5)
        except OSError:
            pass  # the sender cut it off
        finally:
            conn.close()
            with self.lock:
                self.open -= 1


def test_hooks_that_drip_their_answer_hold_up_no_other_job(fleet):
    """More drip-feeding hooks in flight than the CPU worker has task threads: another job is
    transcribed and its own hook delivered while all of them are still held open; each is cut
    off at MURMUR_CALLBACK_DEADLINE and counted as a failed try."""
    drip = _Drip()
    drip.start()
    received: list[dict] = []

    class Hooks(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        slow = [fleet.client.submit(str(DATA / "stereo_two_speakers.wav"), language="en", callback_url=drip.url)
                for _ in range(3)]  # the CPU worker runs 2 task threads
        deadline = time.monotonic() + 120
        while drip.open < len(slow):
            assert time.monotonic() < deadline, drip.open
            time.sleep(0.05)
        held_from = time.monotonic()  # the first is cut off 20 s after it opened: the other job must be done sooner
        other = fleet.client.submit(str(DATA / "jfk_inaugural_1961.flac"), language="en",
                                    callback_url=f"http://127.0.0.1:{server.server_port}/hook")
        fleet.client.wait(other, timeout=60)
        while not received and time.monotonic() < held_from + 15:
            time.sleep(0.05)
        assert drip.open == len(slow), "a drip-fed hook was let go before the other job was done"
        assert [h["job_id"] for h in received] == [other] and "country" in words(fleet.client.result(other).text)
        cpu = fleet.of("cpu")
        cpu.wait_for(f"no answer within {SETTINGS['MURMUR_CALLBACK_DEADLINE']} s); try 1 of", timeout=60)
        assert all(queries.get_job(fleet.client.db, j).callback_attempts >= 1 for j in slow)
    finally:
        drip.sock.close()
        server.shutdown()
