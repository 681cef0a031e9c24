"""s3:// sources and transcript outputs against a real S3 API (moto's server on localhost, with its
IAM checks on): real workers read the audio from a bucket and write the transcript files to another."""

from __future__ import annotations

import json
import os
import subprocess
import time

import boto3
import pytest
import redis
from botocore.exceptions import ClientError

from murmur.tasks.fleet.client import Client, JobFailed
from tests.conftest import DATA, fresh_postgres, run_cli, words
from tests.test_distributed import BIN, Worker, _free_port

pytestmark = [pytest.mark.services, pytest.mark.weights]
BROKER = "redis://127.0.0.1:6379/14"
DENIED_BROKER = "redis://127.0.0.1:6379/15"  # a fleet of its own, while the module's fleet still runs
REGION = "us-east-1"
# what the workers' key may do: read the audio bucket, write (and read) the outputs bucket; nothing else
POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": ["arn:aws:s3:::audio", "arn:aws:s3:::audio/*"]},
    {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": ["arn:aws:s3:::outputs/*"]}]}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server whose first requests (this fixture's set-up, counted) run unauthenticated."""
    port = _free_port()
    setup_actions = 3 + 3 + 3  # buckets, objects, IAM user/policy/key
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
    s3.put_object(Bucket="audio", Key="talks/jfk.flac", Body=(DATA / "jfk_inaugural_1961.flac").read_bytes())
    s3.put_object(Bucket="audio", Key="talks/long.flac", Body=(DATA / "en_5min.flac").read_bytes())
    s3.put_object(Bucket="private", Key="jfk.flac", Body=(DATA / "jfk_inaugural_1961.flac").read_bytes())
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="murmur")
    iam.put_user_policy(UserName="murmur", PolicyName="murmur", PolicyDocument=json.dumps(POLICY))
    key = iam.create_access_key(UserName="murmur")["AccessKey"]
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
           "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
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
           "MURMUR_OUTPUT_URI": "s3://outputs/transcripts/", "MURMUR_MAX_BYTES": "2M"}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    workers = [Worker("cpu", env, tmp / "cpu.log"), Worker("gpu", env, tmp / "gpu.log")]
    try:
        for worker in workers:
            worker.wait_for(" ready.")
        yield Client(broker_url=BROKER, database_url=database), workers
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
    client, workers = fleet
    job_id = client.submit("s3://audio/talks/jfk.flac", language="en")
    client.wait(job_id, timeout=120)
    assert "country" in words(client.result(job_id).text)
    bucket = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], region_name=REGION,
                          aws_access_key_id=s3["AWS_ACCESS_KEY_ID"], aws_secret_access_key=s3["AWS_SECRET_ACCESS_KEY"])
    files = {fmt: bucket.get_object(Bucket="outputs", Key=f"transcripts/{job_id}.{fmt}") for fmt in ("json", "srt", "vtt", "txt")}
    text = {fmt: f["Body"].read().decode() for fmt, f in files.items()}
    assert json.loads(text["json"])["job_id"] == job_id and "country" in words(text["txt"])
    assert text["vtt"].startswith("WEBVTT") and " --> " in text["srt"]
    assert files["vtt"]["ContentType"] == "text/vtt"


@pytest.mark.parametrize("source, reason", [
    ("s3://audio/talks/missing.flac", r"cannot download s3://audio/talks/missing\.flac: .*(404|Not Found|NoSuchKey)"),
    ("s3://private/jfk.flac", r"cannot download s3://private/jfk\.flac: .*(403|Forbidden|AccessDenied)"),
    ("s3://audio/talks/long.flac", r"larger than the limit of 2 MiB \(MURMUR_MAX_BYTES\)"),
])
def test_an_s3_source_that_cannot_be_read_fails_its_job_alone(fleet, source, reason):
    client, workers = fleet
    bad = client.submit(source, language="en")
    good = client.submit("s3://audio/talks/jfk.flac", language="en")
    with pytest.raises(JobFailed, match=reason):
        client.wait(bad, timeout=120)
    client.wait(good, timeout=120)
    assert "country" in words(client.result(good).text)
    assert all(w.proc.poll() is None for w in workers)


def test_an_output_bucket_the_workers_may_not_write_fails_the_job_with_the_reason(s3, tmp_path):
    redis.Redis.from_url(DENIED_BROKER).flushdb()
    database = fresh_postgres("murmur_s3_denied_test", create=False)
    env = {**os.environ, **s3, "MURMUR_BROKER_URL": DENIED_BROKER, "MURMUR_DATABASE_URL": database, "MURMUR_DEVICE": "cpu",
           "MURMUR_OUTPUT_URI": "s3://private/transcripts/"}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    workers = [Worker("cpu", env, tmp_path / "cpu.log"), Worker("gpu", env, tmp_path / "gpu.log")]
    try:
        for worker in workers:
            worker.wait_for(" ready.")
        client = Client(broker_url=DENIED_BROKER, database_url=database)
        job_id = client.submit("s3://audio/talks/jfk.flac", language="en")
        with pytest.raises(JobFailed, match=r"cannot write the transcript to s3://private/transcripts/\w+\.txt "
                                            r"\(MURMUR_OUTPUT_URI\): .*AccessDenied"):
            client.wait(job_id, timeout=120)
        assert all(w.proc.poll() is None for w in workers)
    finally:
        for worker in workers:
            worker.stop()
        redis.Redis.from_url(DENIED_BROKER).flushdb()
