"""s3:// sources and transcript outputs against a real S3 API (moto's server on localhost, with its
IAM checks on): real workers read the audio from a bucket and write the transcript files to another."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
import redis
from botocore.exceptions import ClientError

from murmur.db import queries
from murmur.tasks.fleet.client import Client, JobFailed
from tests.conftest import DATA, fresh_postgres, run_cli, words
from tests.test_distributed import BIN, Worker, _free_port

pytestmark = [pytest.mark.services, pytest.mark.weights]
BROKER = "redis://127.0.0.1:6379/14"
DENIED_BROKER = "redis://127.0.0.1:6379/15"  # a fleet of its own, while the module's fleet still runs
REGION = "us-east-1"
# what the workers' key may do: read the audio bucket and one nobody may name (elsewhere), write, read
# and delete in the outputs bucket; nothing else
# (moto 5.2.6 checks a HeadObject call as s3:HeadObject, where AWS checks s3:GetObject: both are granted,
# so the test holds on moto before and after that change)
POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:HeadObject", "s3:ListBucket"],
     "Resource": ["arn:aws:s3:::audio", "arn:aws:s3:::audio/*", "arn:aws:s3:::elsewhere", "arn:aws:s3:::elsewhere/*"]},
    {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject", "s3:HeadObject", "s3:DeleteObject"],
     "Resource": ["arn:aws:s3:::outputs/*"]},
    # moto checks a DeleteObjects call against the bucket's own ARN (AWS, each object's s3:DeleteObject),
    # as s3:DeleteObject before 5.2.6 and as s3:DeleteObjects since
    {"Effect": "Allow", "Action": ["s3:DeleteObject", "s3:DeleteObjects"], "Resource": ["arn:aws:s3:::outputs"]}]}
S3_ALLOW = "audio/talks/,private"  # the workers' own list: their key may read elsewhere/, jobs may not


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server whose first requests (this fixture's set-up, counted) run unauthenticated."""
    port = _free_port()
    setup_actions = 4 + 4 + 3  # buckets, objects, IAM user/policy/key
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(setup_actions)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    admin = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "admin", "aws_secret_access_key": "admin"}
    s3 = boto3.client("s3", **admin)
    deadline = time.monotonic() + 30
    while True:
        try:
            s3.create_bucket(Bucket="audio")
            break
        except Exception:  # noqa: BLE001 - not listening yet
            assert time.monotonic() < deadline and server.poll() is None, "moto_server did not start"
            time.sleep(0.2)
    s3.create_bucket(Bucket="outputs")
    s3.create_bucket(Bucket="private")
    s3.create_bucket(Bucket="elsewhere")
    s3.put_object(Bucket="audio", Key="talks/jfk.flac", Body=(DATA / "jfk_inaugural_1961.flac").read_bytes())
    s3.put_object(Bucket="audio", Key="talks/long.flac", Body=(DATA / "en_5min.flac").read_bytes())
    s3.put_object(Bucket="private", Key="jfk.flac", Body=(DATA / "jfk_inaugural_1961.flac").read_bytes())
    s3.put_object(Bucket="elsewhere", Key="jfk.flac", Body=(DATA / "jfk_inaugural_1961.flac").read_bytes())
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="murmur")
    iam.put_user_policy(UserName="murmur", PolicyName="murmur", PolicyDocument=json.dumps(POLICY))
    key = iam.create_access_key(UserName="murmur")["AccessKey"]
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
           "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        yield env
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def fleet(s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3")
    redis.Redis.from_url(BROKER).flushdb()
    database = fresh_postgres("murmur_s3_test", create=False)
    env = {**os.environ, **s3, "MURMUR_BROKER_URL": BROKER, "MURMUR_DATABASE_URL": database, "MURMUR_DEVICE": "cpu",
           "MURMUR_OUTPUT_URI": "s3://outputs/transcripts/", "MURMUR_MAX_BYTES": "2M", "MURMUR_S3_ALLOW": S3_ALLOW}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    workers = [Worker("cpu", env, tmp / "cpu.log"), Worker("gpu", env, tmp / "gpu.log")]
    try:
        for worker in workers:
            worker.wait_for(" ready.")
        yield Client(broker_url=BROKER, database_url=database), workers, env
    finally:
        for worker in workers:
            worker.stop()
        redis.Redis.from_url(DENIED_BROKER).flushdb()
        redis.Redis.from_url(BROKER).flushdb()


def test_the_workers_key_is_refused_outside_its_policy(s3):
    """The IAM checks are on: what the jobs below are refused is refused by S3 itself."""
    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], region_name=REGION,
                          aws_access_key_id=s3["AWS_ACCESS_KEY_ID"], aws_secret_access_key=s3["AWS_SECRET_ACCESS_KEY"])
    assert client.get_object(Bucket="audio", Key="talks/jfk.flac")["ContentLength"] > 0
    with pytest.raises(ClientError, match="AccessDenied"):
        client.get_object(Bucket="private", Key="jfk.flac")


def test_an_s3_source_is_transcribed_and_its_files_written_to_the_output_bucket(fleet, s3):
    client, workers, _ = fleet
    job_id = client.submit("s3://audio/talks/jfk.flac", language="en")
    client.wait(job_id, timeout=120)
    assert "country" in words(client.result(job_id).text)
    bucket = _bucket(s3)
    files = {fmt: bucket.get_object(Bucket="outputs", Key=f"transcripts/{job_id}.{fmt}") for fmt in ("json", "srt", "vtt", "txt")}
    text = {fmt: f["Body"].read().decode() for fmt, f in files.items()}
    assert json.loads(text["json"])["job_id"] == job_id and "country" in words(text["txt"])
    assert text["vtt"].startswith("WEBVTT") and " --> " in text["srt"]
    assert files["vtt"]["ContentType"] == "text/vtt"


UNREADABLE = r"cannot read s3://{}: it does not exist, or the workers may not read it$"


@pytest.mark.parametrize("source, reason, failure", [
    ("s3://audio/talks/missing.flac", UNREADABLE.format(r"audio/talks/missing\.flac"), "source"),
    ("s3://private/jfk.flac", UNREADABLE.format(r"private/jfk\.flac"), "source"),  # refused by S3: the same words
    ("s3://audio/talks/long.flac", r"larger than the limit of 2 MiB \(MURMUR_MAX_BYTES\)", "limit"),
    ("s3://elsewhere/jfk.flac", r"s3://elsewhere/jfk\.flac is outside MURMUR_S3_ALLOW", "forbidden"),  # the workers' list
    ("s3://audio/other/jfk.flac", r"outside MURMUR_S3_ALLOW", "forbidden"),  # a bucket's other prefix
])
def test_an_s3_source_that_cannot_be_read_fails_its_job_alone(fleet, source, reason, failure):
    """This process has no MURMUR_S3_ALLOW (its Client takes any bucket): the workers check their own list."""
    client, workers, _ = fleet
    bad = client.submit(source, language="en")
    good = client.submit("s3://audio/talks/jfk.flac", language="en")
    with pytest.raises(JobFailed, match=reason):
        client.wait(bad, timeout=120)
    assert client.status(bad).failure == failure
    client.wait(good, timeout=120)
    assert "country" in words(client.result(good).text)
    assert all(w.proc.poll() is None for w in workers)


def test_an_output_bucket_the_workers_may_not_write_fails_the_job_with_the_reason(s3, tmp_path):
    with _fleet_of_its_own(s3, tmp_path, MURMUR_OUTPUT_URI="s3://private/transcripts/") as (client, workers):
        job_id = client.submit("s3://audio/talks/jfk.flac", language="en")
        with pytest.raises(JobFailed, match=r"cannot write the transcript to s3://private/transcripts/\w+\.txt "
                                            r"\(MURMUR_OUTPUT_URI\): .*AccessDenied"):
            client.wait(job_id, timeout=120)
        assert all(w.proc.poll() is None for w in workers)


@contextmanager
def _fleet_of_its_own(s3: dict, tmp_path, **settings: str):
    """A CPU and a GPU-queue worker with `settings` of their own, on a broker and a database of their own,
    while the module's fleet still runs."""
    redis.Redis.from_url(DENIED_BROKER).flushdb()
    database = fresh_postgres("murmur_s3_denied_test", create=False)
    env = {**os.environ, **s3, "MURMUR_BROKER_URL": DENIED_BROKER, "MURMUR_DATABASE_URL": database, "MURMUR_DEVICE": "cpu",
           **settings}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    workers = [Worker("cpu", env, tmp_path / "cpu.log"), Worker("gpu", env, tmp_path / "gpu.log")]
    try:
        for worker in workers:
            worker.wait_for(" ready.")
        yield Client(broker_url=DENIED_BROKER, database_url=database), workers
    finally:
        for worker in workers:
            worker.stop()
        redis.Redis.from_url(DENIED_BROKER).flushdb()


def _bucket(s3: dict):
    """The workers' own view of S3 (their key, their rights)."""
    return boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], region_name=REGION,
                        aws_access_key_id=s3["AWS_ACCESS_KEY_ID"], aws_secret_access_key=s3["AWS_SECRET_ACCESS_KEY"])


def test_a_producer_with_the_list_refuses_at_once_and_the_api_takes_only_listed_buckets(fleet, monkeypatch, tmp_path):
    """MURMUR_S3_ALLOW on every door: a Client that has it refuses a bucket outside it before queueing;
    `murmur serve` with no list takes no s3:// source at all (400), and with one, the listed buckets only."""
    from murmur.settings import get_settings
    from murmur.workers.errors import MurmurError
    from tests.test_api import Server

    client, _, env = fleet
    monkeypatch.setenv("MURMUR_S3_ALLOW", S3_ALLOW)
    get_settings.cache_clear()
    try:
        with pytest.raises(MurmurError, match="outside MURMUR_S3_ALLOW"):
            client.submit("s3://elsewhere/jfk.flac", language="en")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    unlisted = {k: v for k, v in env.items() if k != "MURMUR_S3_ALLOW"}
    for server_env, expected in ((unlisted, {"s3://audio/talks/jfk.flac": 400, "s3://elsewhere/jfk.flac": 400}),
                                 (env, {"s3://audio/talks/jfk.flac": 202, "s3://elsewhere/jfk.flac": 400})):
        server = Server(server_env, tmp_path / f"serve-{len(expected)}-{id(server_env)}.log")
        try:
            for source, status in expected.items():
                answer = httpx.post(server.url + "/v1/jobs", json={"source": source, "language": "en"}, timeout=30)
                assert answer.status_code == status, (source, answer.text)
                if status == 400:
                    assert "MURMUR_S3_ALLOW" in answer.json()["error"]["message"]
                else:
                    client.wait(answer.json()["id"], timeout=120)
        finally:
            server.stop()


def test_a_pruned_jobs_transcript_files_go_with_it(fleet, s3):
    client, _, env = fleet
    job_id = client.submit("s3://audio/talks/jfk.flac", language="en")
    client.wait(job_id, timeout=120)
    bucket = _bucket(s3)
    keys = [f"transcripts/{job_id}.{fmt}" for fmt in ("json", "srt", "vtt", "txt")]
    assert all(bucket.get_object(Bucket="outputs", Key=key) for key in keys)
    pruned = run_cli("prune", "--older-than", "0", env=env)
    assert pruned.returncode == 0 and pruned.stdout.startswith("deleted "), pruned.stdout + pruned.stderr
    assert queries.get_job(client.db, job_id) is None
    left = []
    for key in keys:
        try:
            left.append(bucket.get_object(Bucket="outputs", Key=key) and key)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "NoSuchKey", exc
    assert left == [], pruned.stderr


class _Flaky(ThreadingHTTPServer):
    """A proxy in front of the S3 server that answers the first `failures` writes 503 SlowDown, as S3 does
    when it is busy; everything else, and the writes after them, go through byte for byte."""

    def __init__(self, upstream: str, failures: int) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream, self.failures, self.refused = urlsplit(upstream), failures, 0
        self.lock = threading.Lock()


class _Forward(BaseHTTPRequestHandler):
    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            refuse = self.command == "PUT" and self.server.refused < self.server.failures
            self.server.refused += refuse
        if refuse:
            error = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        upstream = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port, timeout=30)
        upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    def log_message(self, *args):
        pass


def test_a_busy_s3_delays_the_transcript_files_and_fails_no_job(s3, tmp_path):
    """S3 answers the first eight writes 503 SlowDown: more than one write's own retries take, so the job's
    assembly is tried again later, and the job ends done with its files (it failed on the first refusal)."""
    proxy = _Flaky(s3["AWS_ENDPOINT_URL"], failures=8)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        with _fleet_of_its_own(s3, tmp_path, AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.server_port}",
                               MURMUR_OUTPUT_URI="s3://outputs/busy/") as (client, _):
            job_id = client.submit("s3://audio/talks/jfk.flac", language="en")
            client.wait(job_id, timeout=180)
        assert proxy.refused == 8
        written = _bucket(s3).get_object(Bucket="outputs", Key=f"busy/{job_id}.txt")["Body"].read().decode()
        assert "country" in words(written)
    finally:
        proxy.shutdown()
