"""The HTTP API as several tenants share it, probed on 127.0.0.1 against real `murmur serve` processes:
where a request may come from, how much it may send, what a retry makes, what a key may see and ask.
Each test here failed on the code before these rules."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
import time

import httpx
import pytest
import redis
from sqlalchemy import func, select

from murmur.db import queries
from murmur.db.models import Job
from murmur.db.session import sessions
from murmur.workers.errors import Failure
from tests.conftest import DATA, fresh_postgres, run_cli
from tests.test_api import Server
from tests.test_distributed import _free_port

pytestmark = pytest.mark.services
JFK = DATA / "jfk_inaugural_1961.flac"


@pytest.fixture(scope="module")
def keyless(tmp_path_factory):
    """`murmur serve --embedded` with no key, on loopback: anyone on the machine, as localhost."""
    home = tmp_path_factory.mktemp("keyless")
    env = {**os.environ, "XDG_DATA_HOME": str(home), "MURMUR_DEVICE": "cpu", "MURMUR_UPLOAD_TIMEOUT": "2",
           "MURMUR_RETENTION": "2"}
    env.pop("MURMUR_DATABASE_URL", None)
    server = Server(env, home / "serve.log", "--embedded")
    try:
        yield type("Keyless", (), {"url": server.url, "port": server.port, "env": env, "home": home,
                                   "db": sessions(f"sqlite:///{home / 'murmur' / 'murmur.db'}")})
    finally:
        server.stop()


def test_a_keyless_server_answers_loopback_names_only_and_no_page_of_another_site(keyless):
    """DNS rebinding (a name of the attacker's pointed at 127.0.0.1) and CSRF (a form on another site
    posting to localhost) both reached every job of a keyless server."""
    port = keyless.port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert httpx.get(keyless.url + "/v1/models", headers={"host": host}).status_code == 200, host
    rebound = httpx.get(keyless.url + "/v1/jobs", headers={"host": f"attacker.example:{port}"})
    assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "host_not_allowed"
    body = {"source": "s3://bucket/talk.flac"}
    for headers in ({"origin": "https://attacker.example"}, {"origin": "null"}, {"sec-fetch-site": "cross-site"}):
        forged = httpx.post(keyless.url + "/v1/jobs", json=body, headers=headers)
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "cross_site", headers
    same = httpx.post(keyless.url + "/v1/jobs", json=body, headers={"origin": f"http://127.0.0.1:{port}"})
    assert same.status_code == 400  # let through, then refused for its bucket (MURMUR_S3_ALLOW is unset)
    assert httpx.post(keyless.url + "/v1/jobs", json=body).status_code == 400  # a program sends no Origin


def test_a_json_body_is_capped_before_it_is_read(keyless):
    huge = b'{"source": "s3://b/k", "language": "' + b"x" * (300 * 1024) + b'"}'
    declared = httpx.post(keyless.url + "/v1/jobs", content=huge, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: refused as the bytes pass the cap
        for start in range(0, len(huge), 16 * 1024):
            yield huge[start:start + 16 * 1024]

    streamed = httpx.post(keyless.url + "/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def _stalled_upload(url: str, headers: dict | None = None, declared: int = 50_000) -> socket.socket:
    """A multipart upload that sends its first bytes and then nothing: what a slow or hostile client does."""
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)))
    lines = ["POST /v1/jobs HTTP/1.1", f"host: {host}:{port}", "content-type: multipart/form-data; boundary=b",
             f"content-length: {declared}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    conn.sendall(b'--b\r\ncontent-disposition: form-data; name="file"; filename="talk.flac"\r\n\r\n' + b"\0" * 1000)
    return conn


def _answer(conn: socket.socket, timeout: float) -> tuple[int, bytes]:
    """The answer's status and its whole body: the body may come in a segment of its own, after the head."""
    conn.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data and (received := conn.recv(4096)):
        data += received
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.partition(b":")[2]) for line in head.split(b"\r\n")[1:]
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length and (received := conn.recv(4096)):
        body += received
    return int(head.split()[1]), body


def test_a_stalled_upload_is_cut_off_and_its_file_removed_and_an_oversized_one_refused_unread(keyless):
    uploads = keyless.home / "murmur" / "uploads"
    conn = _stalled_upload(keyless.url)
    try:
        deadline = time.monotonic() + 5
        while not list(uploads.glob("*.flac")):  # the partial file is the server user's alone
            assert time.monotonic() < deadline
            time.sleep(0.05)
        [partial] = list(uploads.glob("*.flac"))
        assert stat.S_IMODE(partial.stat().st_mode) == 0o600 and stat.S_IMODE(uploads.stat().st_mode) == 0o700
        started = time.monotonic()
        status, body = _answer(conn, timeout=30)
        assert status == 408 and b"MURMUR_UPLOAD_TIMEOUT" in body and time.monotonic() - started < 10
    finally:
        conn.close()
    assert not list(uploads.glob("*.flac"))
    assert stat.S_IMODE((keyless.home / "murmur" / "murmur.db").stat().st_mode) == 0o600
    oversized = _stalled_upload(keyless.url, declared=5 * 1024**3)  # 5 GiB declared, over MURMUR_MAX_BYTES (2G)
    try:
        assert _answer(oversized, timeout=10)[0] == 413
    finally:
        oversized.close()


def test_an_upload_that_would_leave_the_disk_short_is_refused_at_once(tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "MURMUR_UPLOAD_MIN_FREE": "1000T"}
    env.pop("MURMUR_DATABASE_URL", None)
    server = Server(env, tmp_path / "serve.log", "--embedded")
    try:
        with JFK.open("rb") as f:
            refused = httpx.post(server.url + "/v1/jobs", files={"file": ("jfk.flac", f)})
        assert refused.status_code == 507 and refused.json()["error"]["code"] == "insufficient_storage"
        assert not list((tmp_path / "murmur" / "uploads").glob("*"))
    finally:
        server.stop()


def test_internal_failures_are_named_not_described_and_an_event_stream_is_one_of_a_few(keyless):
    job_id = queries.create_job(keyless.db, "/srv/murmur/uploads/x.flac", {"model": "base"})
    queries.fail_job(keyless.db, job_id, "internal error: RuntimeError: /opt/secret/path exploded", Failure.internal)
    shown = httpx.get(f"{keyless.url}/v1/jobs/{job_id}").json()
    assert shown["error"] == f"internal error: the server's log has the details (job {job_id})"
    waiting = queries.create_job(keyless.db, "/srv/murmur/uploads/y.flac", {"model": "base"})  # never started
    with httpx.Client(base_url=keyless.url, timeout=30) as client:
        streams = [client.stream("GET", f"/v1/jobs/{waiting}/events") for _ in range(8)]
        opened = [s.__enter__() for s in streams]
        assert all(r.status_code == 200 for r in opened)
        ninth = client.get(f"/v1/jobs/{waiting}/events")
        assert ninth.status_code == 429 and ninth.json()["error"]["code"] == "too_many_event_streams"
        for s in streams:
            s.__exit__(None, None, None)
    queries.cancel_job(keyless.db, waiting)


def test_jobs_past_the_retention_are_pruned_by_an_embedded_server_too(keyless):
    from datetime import datetime, timedelta, timezone

    old = queries.create_job(keyless.db, str(keyless.home / "murmur" / "uploads" / "old.flac"), {"model": "base"})
    queries.fail_job(keyless.db, old, "cancelled", Failure.cancelled)
    queries.update_job(keyless.db, old, finished_at=datetime.now(timezone.utc) - timedelta(hours=1))
    deadline = time.monotonic() + 20
    while queries.get_job(keyless.db, old) is not None:  # MURMUR_RETENTION=2: pruned within a few seconds
        assert time.monotonic() < deadline, "serve --embedded never pruned"
        time.sleep(0.2)


@pytest.mark.weights
def test_a_retried_request_finds_its_job_and_two_at_once_make_one(keyless):
    def post(key: str) -> httpx.Response:
        with JFK.open("rb") as f:
            return httpx.post(keyless.url + "/v1/jobs", files={"file": ("jfk.flac", f)}, data={"language": "en"},
                              headers={"idempotency-key": key}, timeout=60)

    first, again = post("upload-1"), post("upload-1")
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    answers = []
    racers = [threading.Thread(target=lambda: answers.append(post("upload-2"))) for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert len({a.json()["id"] for a in answers}) == 1 and all(a.status_code == 202 for a in answers)
    assert [queries.job_by_request_key(keyless.db, f"-:upload-{n}") is not None for n in (1, 2)] == [True, True]
    with keyless.db() as s:
        made = s.scalar(select(func.count()).select_from(Job).where(Job.request_key.like("-:upload-%")))
    assert made == 2
    bad = httpx.post(keyless.url + "/v1/jobs", json={"source": "s3://b/k"}, headers={"idempotency-key": "x" * 300})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"


@pytest.fixture(scope="module")
def fleet_api(tmp_path_factory):
    """`murmur serve` over a fleet whose broker is a private redis-server (stopped by the tests), with keys."""
    tmp = tmp_path_factory.mktemp("tenants")
    port = _free_port()
    broker = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                               "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    database = fresh_postgres("murmur_tenants_test", create=False)
    uploads = tmp / "uploads"
    env = {**os.environ, "MURMUR_BROKER_URL": f"redis://127.0.0.1:{port}/0", "MURMUR_DATABASE_URL": database,
           "MURMUR_UPLOAD_DIR": str(uploads), "MURMUR_UPLOAD_TIMEOUT": "3"}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    keys, secrets = {}, {}
    for name, extra in (("narrow", ("--max-jobs", "1")), ("patient", ("--top-priority", "5"))):
        created = run_cli("keys", "create", name, *extra, env=env)
        assert created.returncode == 0, created.stderr
        keys[name] = created.stdout.strip()
        secrets[name] = next(line for line in created.stderr.splitlines() if line.startswith("whsec-"))
    server = Server(env, tmp / "serve.log")
    try:
        yield type("FleetApi", (), {"url": server.url, "keys": keys, "secrets": secrets, "env": env, "uploads": uploads,
                                    "db": sessions(database), "broker": broker, "database": database})
    finally:
        server.stop()
        broker.kill()
        broker.wait()


def _as(api, name: str) -> dict:
    return {"authorization": f"Bearer {api.keys[name]}"}


def test_a_keys_uploads_in_progress_count_toward_its_job_limit(fleet_api):
    """narrow may hold one job: while one upload of its is on its way, a second is refused at once
    (six uploads of a one-job key were on disk at the same time)."""
    stalled = _stalled_upload(fleet_api.url, _as(fleet_api, "narrow"))
    try:
        time.sleep(0.5)
        with JFK.open("rb") as f:
            second = httpx.post(fleet_api.url + "/v1/jobs", files={"file": ("jfk.flac", f)}, headers=_as(fleet_api, "narrow"))
        assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_jobs_and_uploads"
        assert len(list(fleet_api.uploads.glob("*"))) == 1
    finally:
        stalled.close()


def test_a_key_asks_no_more_urgent_priority_than_its_top(fleet_api):
    with JFK.open("rb") as f:
        urgent = httpx.post(fleet_api.url + "/v1/jobs", files={"file": ("jfk.flac", f)}, data={"priority": "0"},
                            headers=_as(fleet_api, "patient"))
    assert urgent.status_code == 400 and urgent.json()["error"]["code"] == "priority_not_allowed"
    with JFK.open("rb") as f:
        allowed = httpx.post(fleet_api.url + "/v1/jobs", files={"file": ("jfk.flac", f)}, data={"priority": "7"},
                             headers=_as(fleet_api, "patient"))
    assert allowed.status_code == 202
    assert queries.get_job(fleet_api.db, allowed.json()["id"]).priority == 7


def test_the_flower_view_of_a_submission_has_no_webhook_token(fleet_api):
    """Task events and Flower show kwargsrepr: the callback URL's query (its token) is not in it."""
    from murmur.tasks.fleet.client import Client

    client = Client(broker_url=fleet_api.env["MURMUR_BROKER_URL"], database_url=fleet_api.database)
    job_id = client.submit(str(JFK), language="en", callback_url="https://hooks.example/h?token=TOPSECRET")
    queue = redis.Redis.from_url(fleet_api.env["MURMUR_BROKER_URL"])
    [message] = [json.loads(m) for m in queue.lrange("murmur.cpu", 0, -1) if job_id in json.loads(m)["headers"]["id"].replace("-", "")]
    assert "TOPSECRET" not in message["headers"]["kwargsrepr"] and "https://hooks.example/h" in message["headers"]["kwargsrepr"]
    queries.cancel_job(client.db, job_id)


def test_broker_or_database_away_at_submission_is_503_and_leaves_nothing(fleet_api):
    """A retry of a 503 must not make a duplicate: no job row stays, no upload stays."""
    before = len(queries.jobs_of(fleet_api.db, None, 1000))
    time.sleep(4)  # MURMUR_UPLOAD_TIMEOUT: the uploads an earlier test left stalled are gone
    uploads = set(fleet_api.uploads.glob("*"))
    fleet_api.broker.kill()
    fleet_api.broker.wait()
    with JFK.open("rb") as f:
        away = httpx.post(fleet_api.url + "/v1/jobs", files={"file": ("jfk.flac", f)}, headers=_as(fleet_api, "patient"),
                          timeout=60)
    assert away.status_code == 503 and away.json()["error"]["code"] == "unavailable"
    with fleet_api.db() as s:  # patient's jobs: the one it made with priority 7, none now
        assert s.scalar(select(func.count()).select_from(Job).where(Job.priority.is_(None), Job.owner.is_not(None))) == 0
    assert set(fleet_api.uploads.glob("*")) == uploads  # the refused request's upload went
    submitted = run_cli("submit", str(JFK), env=fleet_api.env, timeout=120)
    assert submitted.returncode == 1 and "nothing was submitted" in submitted.stderr and "Traceback" not in submitted.stderr
    assert len(queries.jobs_of(fleet_api.db, None, 1000)) == before


def test_a_keys_jobs_come_a_page_at_a_time_newest_first(keyless):
    """GET /v1/jobs pages with a cursor (after=the last id of a page) through any number of jobs."""
    made = [queries.create_job(keyless.db, f"/srv/murmur/uploads/{n}.flac", {"model": "base"}) for n in range(45)]
    for job_id in made:
        queries.cancel_job(keyless.db, job_id)
    seen, after, pages = [], None, 0
    while True:
        page = httpx.get(keyless.url + "/v1/jobs", params={"limit": 20, **({"after": after} if after else {})}).json()
        seen += [job["id"] for job in page["data"]]
        pages += 1
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert pages >= 3 and len(seen) == len(set(seen)) and set(made) <= set(seen)
    assert [j for j in seen if j in made] == made[::-1]  # newest first
    bad = httpx.get(keyless.url + "/v1/jobs", params={"after": "not-a-job"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"


def test_the_database_away_is_503_whatever_the_request_was_doing(fleet_api):
    """Its connections cut and new ones refused (this test's database only): every request answers 503,
    and no upload is left behind; once it is back, the server answers again."""
    from sqlalchemy import create_engine, text

    from tests.conftest import POSTGRES_ADMIN_URL

    database = fleet_api.database.rsplit("/", 1)[1]
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    uploads = set(fleet_api.uploads.glob("*"))
    try:
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false"))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": database})
        time.sleep(2.5)  # past what the server keeps of a key's answer
        with JFK.open("rb") as f:
            away = httpx.post(fleet_api.url + "/v1/jobs", files={"file": ("jfk.flac", f)}, headers=_as(fleet_api, "patient"),
                              timeout=60)
        assert away.status_code == 503 and away.json()["error"]["code"] == "unavailable", away.text
        assert httpx.get(fleet_api.url + "/v1/jobs", headers=_as(fleet_api, "patient"), timeout=60).status_code == 503
        assert set(fleet_api.uploads.glob("*")) == uploads
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        admin.dispose()
    assert httpx.get(fleet_api.url + "/v1/jobs", headers=_as(fleet_api, "patient"), timeout=60).status_code == 200
