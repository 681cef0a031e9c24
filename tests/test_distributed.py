"""The distributed pipeline for real: Redis broker and tensor store, Postgres, `murmur worker`
subprocesses (one CPU, two GPU-queue workers on the CPU), real weights, real audio."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from murmur.db import queries
from murmur.db.models import ChunkRow
from murmur.db.session import sessions, upgrade
from murmur.settings import get_settings
from murmur.tasks.context import Context
from murmur.tasks.embedded.runner import run as run_embedded
from murmur.tasks.fleet.client import Client, JobFailed
from murmur.tasks.fleet.queues import GPU_QUEUE
from murmur.workers.options import JobOptions
from tests.conftest import DATA, fresh_postgres, run_cli, word_error_rate, words
from murmur.workers.errors import MurmurError
from murmur.workers.transcript import Segment, Transcript

pytestmark = [pytest.mark.services, pytest.mark.weights]
STORE_URL = os.environ.get("MURMUR_TEST_BROKER_URL", "redis://127.0.0.1:6379/9")  # Redis: tensors, results
# the same fleet on each broker; tensors and Celery's results stay on the Redis either way
BROKERS = {"redis": STORE_URL, "rabbitmq": os.environ.get("MURMUR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")}
BIN = Path(sys.executable).parent
# a killed worker's chunks go to another once their lease lapses: 6 s, then the next reconciler pass
FAST_RECOVERY = {"MURMUR_LEASE_SECONDS": "6", "MURMUR_RECONCILE_INTERVAL": "2"}
HOOK_SECRET = "test-secret"


class MurmurProcess:
    """A `murmur` command run by a test, its output in `log`; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, env: dict, log: Path, *args: str) -> None:
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen([str(BIN / "murmur"), *args], env=env, stdout=self._file, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._file.close()


class Worker(MurmurProcess):
    def __init__(self, kind: str, env: dict, log: Path, *args: str) -> None:
        super().__init__(env, log, "worker", kind, *args)
        self.kind = kind
        self.name = f"{kind}-{self.proc.pid}@{socket.gethostname()}"

    def wait_for(self, needle: str, timeout: float = 120, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text()[after:]:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {needle!r} after {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.05)


def _purge(broker_url: str) -> None:
    """A test run starts with empty queues, whatever an earlier run left on a broker that keeps them."""
    from kombu import Connection, Queue

    from murmur.tasks.fleet.queues import QUEUES
    from murmur.tasks.jobs import MAX_PRIORITY

    with Connection(broker_url, connect_timeout=10) as connection:
        for name in QUEUES.values():
            queue = Queue(name, max_priority=MAX_PRIORITY)(connection.default_channel)
            queue.declare()
            queue.purge()


@pytest.fixture(scope="module", params=list(BROKERS))
def fleet(request, tmp_path_factory):
    """`murmur db upgrade` on a fresh database, then one CPU worker and two GPU-queue workers."""
    logs = tmp_path_factory.mktemp("worker-logs")
    inputs = tmp_path_factory.mktemp("inputs")
    database_url = fresh_postgres("murmur_dist_test", create=False)  # `murmur db upgrade` creates it
    broker_url = BROKERS[request.param]
    redis.Redis.from_url(STORE_URL).flushdb()
    if request.param != "redis":
        _purge(broker_url)
    env = {
        **os.environ,
        "MURMUR_BROKER_URL": broker_url,
        "MURMUR_TENSOR_URL": STORE_URL,
        "MURMUR_DATABASE_URL": database_url,
        **FAST_RECOVERY,
        "MURMUR_CALLBACK_ALLOW": "127.0.0.1",  # the tests' own hook servers; 127.0.0.3 stays refused
        "MURMUR_CALLBACK_SECRET": HOOK_SECRET,
        "MURMUR_ALLOWED_ROOTS": os.pathsep.join([str(DATA), str(inputs)]),
        "MURMUR_DEVICE": "cpu",
    }
    upgraded = run_cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "created database" in upgraded.stdout
    workers = [Worker("cpu", env, logs / "cpu.log"), Worker("gpu", env, logs / "gpu1.log"), Worker("gpu", env, logs / "gpu2.log")]
    saved = os.environ.get("MURMUR_TENSOR_URL")
    os.environ["MURMUR_TENSOR_URL"] = STORE_URL  # this process's clients read their Celery results there
    try:
        for worker in workers:
            worker.wait_for(" ready.")
        get_settings.cache_clear()
        yield type("Fleet", (), {"env": env, "workers": workers, "inputs": inputs, "database_url": database_url,
                                 "broker": request.param, "broker_url": broker_url,
                                 "client": Client(broker_url=broker_url, database_url=database_url)})
    finally:
        for worker in workers:
            worker.stop()
        os.environ.pop("MURMUR_TENSOR_URL") if saved is None else os.environ.__setitem__("MURMUR_TENSOR_URL", saved)
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """Transcripts of the same files from the embedded runner, for comparison."""
    url = f"sqlite:///{tmp_path_factory.mktemp('embedded') / 'murmur.db'}"
    upgrade(url)
    ctx = Context(db=sessions(url), device="cpu", compute_type="int8", threads=2)
    cache: dict = {}

    def transcript(name: str, **options):
        key = (name, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = run_embedded(ctx, str(DATA / name), JobOptions(**options))
        return cache[key]

    return transcript


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _texts(transcript) -> list[str]:
    return [s.text for s in transcript.segments]


def test_submit_wait_prints_the_transcript_of_a_real_clip(fleet):
    done = run_cli("submit", str(DATA / "jfk_inaugural_1961.flac"), "--wait", "--format", "json", env=fleet.env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["language"] == "en"
    assert word_error_rate((DATA / "jfk_inaugural_1961.txt").read_text(), " ".join(s["text"] for s in result["segments"])) <= 0.1
    status = run_cli("status", result["job_id"], env=fleet.env)
    assert status.stdout.startswith(f"{result['job_id']} done 1/1 chunks language=en")
    srt = run_cli("result", result["job_id"], "--format", "srt", env=fleet.env)
    assert srt.returncode == 0 and srt.stdout.startswith("1\n00:00:00,")
    streamed = run_cli("submit", str(DATA / "jfk_inaugural_1961.flac"), "--wait", "--format", "srt", "--language", "en",
                       env=fleet.env)  # printed as the segments are released: the same text as `result`
    assert streamed.returncode == 0 and streamed.stdout == srt.stdout, (streamed.stdout, srt.stdout)
    job = queries.get_job(fleet.client.db, result["job_id"])
    assert job.prepare_seconds > 0 and job.detect_seconds > 0 and job.decode_seconds > 0


def test_long_file_equals_the_embedded_transcript(fleet, embedded):
    client = fleet.client
    job_id = client.submit(str(DATA / "en_5min.flac"))
    status = client.wait(job_id, timeout=300)
    assert status.n_chunks == status.chunks_done >= 8
    distributed = client.result(job_id)
    local = embedded("en_5min.flac")
    assert distributed.language == local.language == "en"
    # the vote's chunks were decoded from the encoder output they voted with, the others sent on; on CPU
    # the voters are encoded one at a time, and three English ones of five settle the vote
    voted = f"job {job_id}: language en, voted by 3 chunk(s) that decode from the encoder output they voted with"
    [detector] = [w.text() for w in fleet.workers if w.kind == "gpu" and voted in w.text()]
    # the voters, chunk 0 among them, are the detecting worker's next batch: the chunks are sent on only
    # after the vote was handed to the batcher, so none of them starts a batch that chunk 0 waits behind
    detecting = detector[detector.rindex("murmur.detect_language[", 0, detector.index(voted)):]
    assert "decoding a batch" not in detecting[:detecting.index(voted)]
    after_vote = re.search(r"decoding a batch of (\d+) chunk", detecting)
    assert after_vote and int(after_vote.group(1)) >= 3, detecting[:1000]
    assert _texts(distributed) == _texts(local)
    assert word_error_rate((DATA / "en_5min.txt").read_text(), distributed.text) <= 0.08
    keys = redis.Redis.from_url(STORE_URL).keys(f"murmur:feat:{job_id}:*")
    assert keys == []  # every tensor deleted once its chunk was stored


def test_the_fleet_labels_speakers_as_the_embedded_run_does_and_a_redelivered_assembly_changes_nothing(fleet, embedded):
    client = fleet.client
    options = {"language": "en", "diarize": True, "min_speakers": 2}
    job_id = client.submit(str(DATA / "dev_conv_en_3spk_female.flac"), **options)
    client.wait(job_id, timeout=300)
    distributed = client.result(job_id)
    local = embedded("dev_conv_en_3spk_female.flac", **options)
    labelled = [(s.speaker, s.text) for s in distributed.segments]
    assert labelled == [(s.speaker, s.text) for s in local.segments]
    assert {speaker for speaker, _ in labelled} == {"S1", "S2", "S3"}
    fleet.client.app.send_task("murmur.assemble", args=[job_id], queue="murmur.cpu")
    time.sleep(3)
    assert [(s.speaker, s.text) for s in client.result(job_id).segments] == labelled


def test_a_fleet_job_streams_its_segments_in_order_then_its_transcript_and_a_failed_one_says_why(fleet, tmp_path):
    client = fleet.client
    job_id = client.submit(str(DATA / "en_de_codeswitch.flac"), multilingual=True)  # a chunk per stretch of speech
    items = list(client.stream(job_id, timeout=300))
    *segments, transcript = items
    assert isinstance(transcript, Transcript) and len(transcript.segments) >= 4
    assert [(s.chunk_idx, s.idx, s.text) for s in segments] == [(s.chunk_idx, s.idx, s.text) for s in transcript.segments]
    bad = fleet.inputs / "not-audio.wav"
    bad.write_bytes(b"plain text, not a recording" * 40)
    failing = client.submit(str(bad))
    with pytest.raises(JobFailed, match="not a readable audio file"):
        list(client.stream(failing, timeout=120))


CLIPS = {  # mixed lengths: 4, 5, 11, 15 and 68 seconds
    "nst_quiet_room_4s.wav": set(),
    "stereo_two_speakers.wav": {"behind", "curtain"},
    "jfk_inaugural_1961.flac": {"fellow", "americans", "country"},
    "mls_spanish_13697_11991_000000.opus": {"carlos"},
    "librivox_grimmelshausen_simplicissimus_title.mp3": {"grimmelshausen", "wahrheit"},  # "Simplicissimus" varies in spelling
}


def test_twenty_concurrent_jobs_finish_with_the_right_texts_on_both_gpu_workers(fleet, embedded):
    client = fleet.client
    names = [name for _ in range(4) for name in CLIPS]
    for name in CLIPS:
        embedded(name)  # the expected transcripts, before the workers get busy
    jobs = [client.submit(str(DATA / name)) for name in names]
    for job_id, name in zip(jobs, names):
        client.wait(job_id, timeout=400)
        result = client.result(job_id)
        expected = embedded(name)  # decoded alone
        assert result.language == expected.language, name
        # short chunks of different jobs share windows: each job's WER against its reference stays within 0.3 of alone
        reference_file = (DATA / name).with_suffix(".txt")
        reference = reference_file.read_text() if reference_file.exists() else ""  # the quiet room: nothing said
        assert word_error_rate(reference, result.text) <= word_error_rate(reference, expected.text) + 0.3, (
            name, result.text, expected.text)
        assert CLIPS[name] <= set(words(result.text)), (name, result.text)
        if not CLIPS[name]:
            assert result.segments == []
    with client.db() as s:
        decoded_by = set(s.scalars(select(ChunkRow.worker).where(ChunkRow.job_id.in_(jobs))))
    assert decoded_by == {w.name for w in fleet.workers if w.kind == "gpu"}  # both GPU workers took work
    batches = [line for w in fleet.workers if w.kind == "gpu" for line in w.text().splitlines() if "decoding a batch of" in line]
    assert any(int(line.split("from ")[1].split()[0]) > 1 for line in batches)  # chunks of several jobs in one batch


def test_multilingual_job_reports_german_segments_in_german(fleet):
    truth = json.loads((DATA / "en_de_codeswitch.json").read_text())["segments"]
    job_id = fleet.client.submit(str(DATA / "en_de_codeswitch.flac"), multilingual=True)
    fleet.client.wait(job_id, timeout=300)
    result = fleet.client.result(job_id)
    german = [s for s in result.segments if s.language == "de"]
    assert len(german) >= 5 and len([s for s in result.segments if s.language == "en"]) >= 5
    assert {"und", "die", "wir"} & set(words(" ".join(s.text for s in german)))
    for segment in german:
        middle = (segment.start + segment.end) / 2
        assert min(truth, key=lambda t: abs((t["start"] + t["end"]) / 2 - middle))["lang"] == "de"


def test_a_plain_celery_client_in_another_interpreter_gets_a_job_id(fleet):
    script = f"""
import json, sys
from celery import Celery
from kombu import Queue
app = Celery(broker={fleet.broker_url!r}, backend={STORE_URL!r})
app.conf.task_queues = [Queue("murmur.cpu", max_priority=9)]  # as murmur declares it (RabbitMQ checks)
result = app.send_task("murmur.transcribe", queue="murmur.cpu",
                       kwargs={{"source": {str(DATA / 'jfk_inaugural_1961.flac')!r}, "language": "en", "word_timestamps": True}})
job_id = result.get(timeout=60)
print(json.dumps({{"job_id": job_id, "murmur_imported": sorted(m for m in sys.modules if m.split(".")[0] == "murmur")}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["murmur_imported"] == []
    fleet.client.wait(reply["job_id"], timeout=120)
    result = fleet.client.result(reply["job_id"])
    assert "country" in words(result.text)
    assert result.segments[0].words[0].text.strip().lower() == "and"


def test_bad_input_fails_its_job_with_a_reason_and_nothing_else(fleet):
    client = fleet.client
    bogus = fleet.inputs / "notes.wav"
    bogus.write_text("this is not audio, only text pretending to be a wav file")
    outside = Path(__file__)  # exists, but outside MURMUR_ALLOWED_ROOTS
    good = client.submit(str(DATA / "stereo_two_speakers.wav"), language="en")
    bad = client.submit(str(bogus))
    fenced = client.submit(str(outside))
    missing = client.submit(str(fleet.inputs / "gone.flac"))
    raw = client.app.send_task("murmur.transcribe", queue="murmur.cpu",
                               kwargs={"source": str(DATA / "jfk_inaugural_1961.flac"), "beam_size": "five", "colour": "red"})
    raw_job = raw.get(timeout=60)
    for job_id, reason in [(bad, "not a readable audio file"), (fenced, "outside MURMUR_ALLOWED_ROOTS"),
                           (missing, "no such file"), (raw_job, "unknown option(s): colour")]:
        with pytest.raises(JobFailed, match=reason.replace("(", r"\(").replace(")", r"\)")):
            client.wait(job_id, timeout=60)
        assert client.status(job_id).status == "failed"
    client.wait(good, timeout=120)
    assert "curtain" in words(client.result(good).text)
    with pytest.raises(MurmurError, match="invalid beam size"):
        client.submit(str(DATA / "jfk_inaugural_1961.flac"), beam_size=0)  # refused before anything is queued
    assert all(w.proc.poll() is None for w in fleet.workers)


class _Hooks(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        signed = hmac.new(HOOK_SECRET.encode(), self.headers["X-Murmur-Timestamp"].encode() + b"." + body, hashlib.sha256)
        self.received.append({**json.loads(body), "verified": self.headers["X-Murmur-Signature"] == f"sha256={signed.hexdigest()}"})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def _hooks_for(job_id: str, timeout: float = 30, at_least: int = 1) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(hooks := [h for h in _Hooks.received if h["job_id"] == job_id]) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return hooks


def test_duplicates_of_every_task_change_nothing_and_the_hook_is_posted_once_signed(fleet):
    server = HTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = fleet.client
    try:
        job_id = client.submit(str(DATA / "jfk_inaugural_1961.flac"), language="en",
                               callback_url=f"http://127.0.0.1:{server.server_port}/hook?token=abc")
        before = client.wait(job_id, timeout=120)
        segments = [(s.chunk_idx, s.idx, s.text) for s in queries.get_segments(client.db, job_id)]
        assert _hooks_for(job_id)
        ref = {"key": f"murmur:feat:{job_id}:0", "shape": [80, 3000], "dtype": "float32"}
        sent = [client.app.send_task("murmur.decode", args=(job_id, ref), queue=GPU_QUEUE),
                client.app.send_task("murmur.detect_language", args=(job_id, [ref]), queue=GPU_QUEUE),
                client.app.send_task("murmur.prepare", args=(job_id,), queue="murmur.cpu"),
                client.app.send_task("murmur.transcribe", kwargs={"source": str(DATA / "jfk_inaugural_1961.flac")},
                                     task_id=str(uuid.UUID(job_id)), queue="murmur.cpu"),
                *[client.app.send_task("murmur.assemble", args=(job_id,), queue="murmur.cpu") for _ in range(2)]]
        for message in sent:
            deadline = time.monotonic() + 60
            while not any(f"[{message.id}] succeeded" in w.text() for w in fleet.workers):
                assert time.monotonic() < deadline, message
                time.sleep(0.1)
        time.sleep(1)
        after = client.status(job_id)
        assert after.status == "done" and after.finished_at == before.finished_at and after.chunks_done == 1
        assert [(s.chunk_idx, s.idx, s.text) for s in queries.get_segments(client.db, job_id)] == segments
        hooks = _hooks_for(job_id)
        assert len(hooks) == 1 and hooks[0]["status"] == "done" and hooks[0]["verified"]  # once, signed
        cpu = next(w for w in fleet.workers if w.kind == "cpu")
        assert "token=abc" not in cpu.text() and f"127.0.0.1:{server.server_port}/hook" in cpu.text()
    finally:
        server.shutdown()


def test_hooks_to_addresses_not_allowed_are_refused_and_failed_jobs_are_posted_too(fleet):
    refused = HTTPServer(("127.0.0.3", 0), _Hooks)  # loopback, but not in MURMUR_CALLBACK_ALLOW
    allowed = HTTPServer(("127.0.0.1", 0), _Hooks)
    for server in (refused, allowed):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    client = fleet.client
    try:
        done = client.submit(str(DATA / "stereo_two_speakers.wav"), language="en",
                             callback_url=f"http://127.0.0.3:{refused.server_port}/hook")
        failed = client.submit(str(fleet.inputs / "nothing-here.flac"),
                               callback_url=f"http://127.0.0.1:{allowed.server_port}/hook")
        client.wait(done, timeout=120)
        with pytest.raises(JobFailed, match="no such file"):
            client.wait(failed, timeout=60)
        [hook] = _hooks_for(failed)
        assert hook["status"] == "failed" and "no such file" in hook["error"] and hook["verified"]
        deadline = time.monotonic() + 30
        while queries.get_job(client.db, done).callback_state != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert _hooks_for(done, timeout=0, at_least=0) == []
        cpu = next(w for w in fleet.workers if w.kind == "cpu")
        assert "127.0.0.3, which is not a public address" in cpu.text()
    finally:
        refused.shutdown()
        allowed.shutdown()


def test_forged_messages_are_refused_and_touch_no_job(fleet):
    client = fleet.client
    victim = client.submit(str(DATA / "stereo_two_speakers.wav"), language="en")
    other = client.submit(str(DATA / "jfk_inaugural_1961.flac"), language="en")
    client.wait(victim, timeout=120)
    client.wait(other, timeout=120)
    store = redis.Redis.from_url(STORE_URL)
    store.set("murmur:feat:someone:7", b"precious")
    gpu = [w for w in fleet.workers if w.kind == "gpu"]
    offsets = [len(w.text()) for w in gpu]
    forged = [{"key": f"murmur:feat:{other}:0", "shape": [80, 3000], "dtype": "float32"},  # another job's tensor
              {"key": "murmur:feat:someone:7", "shape": [80, 3000], "dtype": "float32"},  # any key ending in :<int>
              {"key": f"murmur:feat:{victim}:0", "shape": ["a"], "dtype": "float32"},
              "not a reference"]
    for ref in forged:
        client.app.send_task("murmur.decode", args=(victim, ref), queue=GPU_QUEUE)
    deadline = time.monotonic() + 60
    while sum(w.text()[o:].count("refused a message for job") for w, o in zip(gpu, offsets)) < len(forged):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert store.get("murmur:feat:someone:7") == b"precious"
    assert client.status(victim).status == "done" and client.status(other).status == "done"
    # pickle is never accepted: the worker refuses the message and goes on
    with client.app.producer_or_acquire() as producer:
        producer.publish({"task": "murmur.prepare", "id": str(uuid.uuid4()), "args": [victim], "kwargs": {}},
                         serializer="pickle", routing_key="murmur.cpu", exchange="murmur.cpu",
                         headers={"task": "murmur.prepare", "id": str(uuid.uuid4())})
    cpu = next(w for w in fleet.workers if w.kind == "cpu")
    cpu.wait_for("ContentDisallowed", timeout=30)
    assert client.status(victim).status == "done" and all(w.proc.poll() is None for w in fleet.workers)


def test_a_tensor_lost_from_redis_is_recomputed(fleet):
    client = fleet.client
    gpu = [w.name for w in fleet.workers if w.kind == "gpu"]
    replies = client.app.control.cancel_consumer(GPU_QUEUE, destination=gpu, reply=True, timeout=5)
    assert len(replies) == 2
    try:
        job_id = client.submit(str(DATA / "mls_spanish_13697_11991_000000.opus"), language="es")
        deadline = time.monotonic() + 60
        while client.status(job_id).n_chunks is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        store = redis.Redis.from_url(STORE_URL)
        keys = store.keys(f"murmur:feat:{job_id}:*")
        assert keys and 0 < store.ttl(keys[0]) <= 6 * 3600
        store.delete(*keys)  # as if evicted, or Redis restarted
    finally:
        client.app.control.add_consumer(GPU_QUEUE, destination=gpu, reply=True, timeout=5)
    client.wait(job_id, timeout=120)
    assert "carlos" in words(client.result(job_id).text)
    assert any("missing from the store, recomputing" in w.text() for w in fleet.workers if w.kind == "gpu")


def test_flower_lists_the_workers_and_a_finished_task(fleet):
    port = _free_port()
    flower = subprocess.Popen([str(BIN / "celery"), "-A", "murmur.tasks.fleet.app", "flower", f"--port={port}", "--address=127.0.0.1",
                               "--basic-auth=ops:correct-horse"], env=fleet.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        api = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{api}/workers", timeout=5).read()
                raise AssertionError("flower answered without credentials")
            except urllib.error.HTTPError as exc:
                assert exc.code == 401
                break
            except OSError:
                assert time.monotonic() < deadline, "flower did not start"
                time.sleep(0.5)
        credentials = {"Authorization": "Basic " + base64.b64encode(b"ops:correct-horse").decode()}

        def get(url: str, timeout: float) -> bytes:
            return urllib.request.urlopen(urllib.request.Request(url, headers=credentials), timeout=timeout).read()

        job_id = fleet.client.submit(str(DATA / "stereo_two_speakers.wav"), language="en")
        fleet.client.wait(job_id, timeout=120)
        deadline = time.monotonic() + 30
        while True:
            workers = json.loads(get(f"{api}/workers?refresh=1", 20))
            tasks = json.loads(get(f"{api}/tasks", 5))
            finished = [t for t in tasks.values() if t.get("name") == "murmur.assemble" and t.get("state") == "SUCCESS"
                        and job_id in (t.get("args") or "")]
            if {w.name for w in fleet.workers} <= set(workers) and finished:
                break
            assert time.monotonic() < deadline, (sorted(workers), len(tasks))
            time.sleep(0.5)
    finally:
        flower.terminate()
        flower.wait(20)


def test_a_worker_killed_mid_batch_loses_nothing(fleet, embedded):
    """SIGKILL a GPU worker while it decodes: its chunks go to the other worker once their leases lapse,
    within seconds and long before the hour-long visibility timeout would hand its messages back."""
    client = fleet.client
    gpu = [w for w in fleet.workers if w.kind == "gpu"]
    offsets = [len(w.text()) for w in gpu]
    job_id = client.submit(str(DATA / "en_5min.flac"), language="en")
    deadline = time.monotonic() + 120
    victim = None
    while victim is None:
        for worker, offset in zip(gpu, offsets):
            if "decoding a batch of" in worker.text()[offset:]:
                victim = worker
                break
        assert time.monotonic() < deadline, "no batch started"
        time.sleep(0.02)
    quiet_since, size = time.monotonic(), len(victim.text())
    while time.monotonic() - quiet_since < 0.5:  # no message arriving for half a second
        time.sleep(0.02)
        if len(victim.text()) != size:
            quiet_since, size = time.monotonic(), len(victim.text())
        assert time.monotonic() < deadline, "the victim never stopped fetching"
    assert "succeeded" not in victim.text()[victim.text().rindex("decoding a batch of"):]  # still mid-batch
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    killed = time.monotonic()
    status = client.wait(job_id, timeout=300)
    assert time.monotonic() - killed < 120
    assert status.chunks_done == status.n_chunks
    with client.db() as s:
        rows = s.execute(select(Segment.chunk_idx, Segment.idx).where(Segment.job_id == job_id)).all()
        workers = set(s.scalars(select(ChunkRow.worker).where(ChunkRow.job_id == job_id)))
        n_rows = s.scalar(select(func.count()).select_from(Segment).where(Segment.job_id == job_id))
    assert len(set(rows)) == len(rows) == n_rows  # no duplicate segment
    survivor = next(w for w in gpu if w is not victim)
    assert workers == {survivor.name}  # the victim died before storing anything; its chunks went to the survivor
    assert _texts(client.result(job_id)) == _texts(embedded("en_5min.flac", language="en"))


def test_a_wheel_in_a_fresh_venv_works_beside_a_projects_own_tasks_and_db_modules(fleet, tmp_path):
    """The import names cannot clash: from a directory holding its own tasks.py and db.py (the
    Celery tutorial's names), the wheel's client, the raw Celery contract and Flower all work."""
    if fleet.broker != "redis":
        pytest.skip("packaging, not the broker: once is enough")
    root = Path(__file__).parents[1]
    wheels = tmp_path / "wheels"
    source = tmp_path / "source"  # a clean copy: an in-tree build would leave build/ and egg-info in the checkout
    shutil.copytree(root, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("murmur-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("murmur-")} == {"murmur"}  # one top-level package
    assert "murmur/db/migrations/versions/0001_initial.py" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # the dependencies come from this environment's site-packages, without its editable murmur
    (site / "deps.pth").write_text(next(p for p in sys.path if p.endswith("site-packages")) + "\n")
    # --target: pip leaves the running environment (and its editable murmur) alone
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, timeout=300, capture_output=True)
    project = tmp_path / "someone-elses-project"
    project.mkdir()
    (project / "tasks.py").write_text("from celery import Celery\napp = Celery('tasks')\n\n@app.task\ndef add(x, y):\n    return x + y\n")
    (project / "db.py").write_text("raise ImportError('this is the project’s own db.py, not murmur’s')\n")
    python = str(venv / "bin" / "python")

    def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([python, *args], cwd=project, env=fleet.env, capture_output=True, text=True, timeout=timeout)

    client = run("-c", f"""
import json, murmur, murmur.tasks.fleet.client
from murmur import Client, render
client = Client()
job_id = client.submit({str(DATA / 'jfk_inaugural_1961.flac')!r}, language="en")
client.wait(job_id, timeout=240)
print(json.dumps({{"files": [murmur.__file__, murmur.tasks.fleet.client.__file__], "srt": render(client.result(job_id), "srt")}}))
""")
    assert client.returncode == 0, client.stderr
    reply = json.loads(client.stdout)
    assert all(f.startswith(str(site)) for f in reply["files"]), reply["files"]
    assert "country" in words(reply["srt"]) and " --> " in reply["srt"]
    command = run("-m", "murmur", "db", "upgrade")
    assert command.returncode == 0 and "is at the latest revision" in command.stdout, command.stderr
    raw = run("-c", f"""
from celery import Celery
from kombu import Queue
app = Celery(broker={fleet.broker_url!r}, backend={STORE_URL!r})
app.conf.task_queues = [Queue("murmur.cpu", max_priority=9)]
print(app.send_task("murmur.transcribe", queue="murmur.cpu", kwargs={{"source": {str(DATA / 'stereo_two_speakers.wav')!r}}}).get(timeout=60))
""")
    assert raw.returncode == 0, raw.stderr
    fleet.client.wait(raw.stdout.strip(), timeout=120)
    assert "curtain" in words(fleet.client.result(raw.stdout.strip()).text)
    port = _free_port()
    flower = subprocess.Popen([python, "-m", "celery", "-A", "murmur.tasks.fleet.app", "flower", f"--port={port}", "--address=127.0.0.1"],
                              cwd=project, env={**fleet.env, "FLOWER_UNAUTHENTICATED_API": "true"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                workers = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/workers?refresh=1", timeout=20).read())
                if {w.name for w in fleet.workers if w.proc.poll() is None} <= set(workers):
                    break
            except OSError:
                pass
            assert flower.poll() is None, flower.stderr.read()
            assert time.monotonic() < deadline, "flower did not list the workers"
            time.sleep(0.5)
    finally:
        flower.terminate()
        flower.wait(20)
