"""`murmur serve` for real: the official `openai` client, curl and schemathesis against a server
process in front of real workers (Postgres, Redis), and the same endpoints with `--embedded`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest
import redis

from murmur.db import queries
from murmur.db.session import sessions
from tests.conftest import DATA, fresh_postgres, run_cli, word_error_rate, words
from tests.test_distributed import MurmurProcess, Worker, _free_port

pytestmark = [pytest.mark.services, pytest.mark.weights]
STORE_URL = "redis://127.0.0.1:6379/11"
BIN = Path(sys.executable).parent
JFK = DATA / "jfk_inaugural_1961.flac"
JFK_TEXT = (DATA / "jfk_inaugural_1961.txt").read_text()
MAX_BYTES = 8 * 1024 * 1024


class Server(MurmurProcess):
    """A `murmur serve` process, ready once /healthz answers."""

    def __init__(self, env: dict, log: Path, *args: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(env, log, "serve", "--port", str(self.port), *args)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"murmur serve did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One CPU worker, one GPU-queue worker (batches of 2, so a cancel finds chunks still queued),
    and `murmur serve` in front of them with two keys, alice's and bob's, and carol's that may hold one job."""
    logs = tmp_path_factory.mktemp("api-logs")
    uploads = tmp_path_factory.mktemp("uploads")
    database_url = fresh_postgres("murmur_api_test", create=False)
    redis.Redis.from_url(STORE_URL).flushdb()
    env = {**os.environ, "MURMUR_BROKER_URL": STORE_URL, "MURMUR_DATABASE_URL": database_url, "MURMUR_DEVICE": "cpu",
           "MURMUR_UPLOAD_DIR": str(uploads), "MURMUR_ALLOWED_ROOTS": os.pathsep.join([str(uploads), str(DATA)]),
           "MURMUR_MAX_BYTES": str(MAX_BYTES), "MURMUR_LEASE_SECONDS": "6", "MURMUR_RECONCILE_INTERVAL": "2",
           "MURMUR_CALLBACK_ALLOW": "127.0.0.1", "MURMUR_CALLBACK_SECRET": "the fleet's own"}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    keys, secrets = {}, {}
    for name, extra in (("alice", ()), ("bob", ()), ("carol", ("--max-jobs", "1"))):
        created = run_cli("keys", "create", name, *extra, env=env)
        assert created.returncode == 0, created.stderr
        keys[name] = created.stdout.strip()
        secrets[name] = next(line for line in created.stderr.splitlines() if line.startswith("whsec-"))
    workers = [Worker("cpu", env, logs / "cpu.log"), Worker("gpu", env, logs / "gpu.log", "--batch-size", "2", "--threads", "2")]
    server = None
    try:
        for worker in workers:
            worker.wait_for(" ready.")
        server = Server(env, logs / "serve.log")
        yield type("Api", (), {"url": server.url, "keys": keys, "secrets": secrets, "env": env, "uploads": uploads,
                               "workers": workers, "db": sessions(database_url), "server": server})
    finally:
        if server:
            server.stop()
        for worker in workers:
            worker.stop()


def _client(api, key: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=api.url + "/v1", api_key=api.keys[key], max_retries=0, timeout=300)


def _http(api, key: str | None = "alice") -> httpx.Client:
    headers = {"authorization": f"Bearer {api.keys[key]}"} if key else {}
    return httpx.Client(base_url=api.url, headers=headers, timeout=300)


def _check_formats(client: openai.OpenAI) -> None:
    """Each response_format, as the official client returns it, holds the clip's words and times."""
    with JFK.open("rb") as f:
        plain = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert word_error_rate(JFK_TEXT, plain.text) <= 0.1
    for fmt in ("text", "srt", "vtt"):
        with JFK.open("rb") as f:
            text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format=fmt)
        assert word_error_rate(JFK_TEXT, text) <= 0.1 if fmt == "text" else "ask not what" in text.lower()
        if fmt == "srt":
            assert text.startswith("1\n00:00:00,") and " --> " in text
        if fmt == "vtt":
            assert text.startswith("WEBVTT\n\n00:00:00.")
    with JFK.open("rb") as f:
        verbose = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                                     timestamp_granularities=["segment", "word"])
    assert verbose.language == "en" and verbose.duration == pytest.approx(11.0, abs=0.1)
    assert word_error_rate(JFK_TEXT, " ".join(s.text for s in verbose.segments)) <= 0.1
    ends = [0.0] + [s.end for s in verbose.segments]
    assert all(ends[i] <= s.start < s.end <= 11.0 for i, s in enumerate(verbose.segments))
    assert words(" ".join(w.word for w in verbose.words)) == words(verbose.text)
    assert all(0 <= w.start <= w.end <= 11.0 for w in verbose.words)
    assert all(0.0 < w.probability <= 1.0 for w in verbose.words)  # each word's confidence, as faster-whisper gives it
    with JFK.open("rb") as f:
        segments_only = client.audio.transcriptions.create(model="base", file=f, response_format="verbose_json")
    assert segments_only.segments and not getattr(segments_only, "words", None)


def test_the_openai_client_gets_every_response_format_from_the_fleet(api):
    _check_formats(_client(api))
    assert list(api.uploads.iterdir()) == []  # each upload went with its answer


def test_concurrent_requests_each_get_their_own_transcript(api):
    """Requests that start waiting while the server is polling for others' jobs (the bench found one
    answered 'failed' at once, its upload deleted under the worker)."""
    quiet = DATA / "nst_quiet_room_4s.wav"  # a quiet room: its transcript is empty
    clips = [JFK, quiet] * 4

    def one(path: Path) -> str:
        with path.open("rb") as f:
            return _client(api, "bob").audio.transcriptions.create(model="whisper-1", file=f).text

    with ThreadPoolExecutor(len(clips)) as pool:
        texts = list(pool.map(one, clips))
    assert all(word_error_rate(JFK_TEXT, t) <= 0.1 for t in texts[::2]), texts
    assert texts[1::2] == [""] * 4, texts


def test_prompts_and_hotwords_reach_their_own_jobs_in_shared_batches(api):
    """OpenAI's `prompt` and murmur's `hotwords`: the same clip sent three ways at once (the GPU worker
    batches them together) comes back spelled as each request asked, and only as it asked."""
    clip = DATA / "keyterms_celery_redis.flac"
    asks = [{}, {"prompt": "PostgreSQL, Celery, CTranslate2, nginx, NumPy, Redis, PyTorch."},
            {"extra_body": {"hotwords": "Celery, Redis, CTranslate2, PostgreSQL"}}]

    def one(extra: dict) -> set[str]:
        with clip.open("rb") as f:
            return set(words(_client(api).audio.transcriptions.create(model="whisper-1", file=f, language="en", **extra).text))

    with ThreadPoolExecutor(len(asks)) as pool:
        plain, prompted, hot = pool.map(one, asks)
    terms = {"celery", "redis", "ctranslate2", "postgresql"}
    assert not terms & plain, plain
    assert terms <= prompted and not {"nginx", "numpy", "pytorch"} & prompted, prompted
    assert len(terms & hot) >= 3, hot


# openai 3.63 marks audio.translations.create deprecated: the test is of murmur's endpoint, which the client still calls
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_translations_give_english_text(api):
    with (DATA / "mls_spanish_13697_11991_000000.opus").open("rb") as f:
        english = _client(api).audio.translations.create(model="whisper-1", file=f)
    spanish = (DATA / "mls_spanish_13697_11991_000000.txt").read_text()
    assert len(words(english.text)) >= 10
    assert len(set(words(english.text)) & {"the", "and", "of", "to", "a", "in", "was", "that", "he", "it"}) >= 2
    assert word_error_rate(spanish, english.text) > 0.5  # not the Spanish transcript


def test_stream_true_gives_the_official_client_the_text_in_order_then_all_of_it(api):
    """OpenAI's `stream=true`: a delta for each segment as it is released, whose concatenation is the done
    event's text; a job that fails ends its stream with the reason; what cannot stream is refused first."""
    client = _client(api)
    german = DATA / "librivox_grimmelshausen_simplicissimus_title.mp3"  # 68 s: three chunks, decoded two at a time
    with german.open("rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, language="de", stream=True))
    assert [e.type for e in events] == ["transcript.text.delta"] * (len(events) - 1) + ["transcript.text.done"]
    deltas, done = [e.delta for e in events[:-1]], events[-1]
    assert len(deltas) >= 3 and "".join(deltas) == done.text
    assert word_error_rate(german.with_suffix(".txt").read_text(), done.text) <= 0.35
    with pytest.raises(openai.APIError) as raised:
        list(client.audio.transcriptions.create(model="whisper-1", file=("notes.wav", b"not audio at all" * 40), stream=True))
    assert "audio" in raised.value.message.lower()
    for kwargs in ({"response_format": "srt"}, {"response_format": "verbose_json"}):
        with JFK.open("rb") as f, pytest.raises(openai.BadRequestError) as refused:
            client.audio.transcriptions.create(model="whisper-1", file=f, stream=True, **kwargs)
        assert "stream" in refused.value.body["message"]
    assert list(api.uploads.iterdir()) == []  # each stream's upload went when it ended


def test_models_lists_what_the_workers_can_load(api):
    ids = [m.id for m in _client(api).models.list()]
    assert ids[:3] == ["whisper-1", "base", "tiny.en"]


def test_curl_multipart(api):
    command = ["curl", "-sS", "-w", "\n%{http_code}", f"{api.url}/v1/audio/transcriptions",
               "-H", f"Authorization: Bearer {api.keys['bob']}", "-F", f"file=@{JFK}", "-F", "model=whisper-1",
               "-F", "response_format=srt", "-F", "language=en"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    body, status = done.stdout.rsplit("\n", 1)
    assert status == "200", body
    assert body.startswith("1\n00:00:00,") and "your country can do for you" in body.lower()
    no_file = [arg for arg in command if not arg.startswith("file=@")]
    no_file.remove("-F")
    refused = subprocess.run(no_file, capture_output=True, text=True, timeout=60)
    body, status = refused.stdout.rsplit("\n", 1)
    assert status == "400" and json.loads(body)["error"]["code"] == "missing_file"


def test_a_job_belongs_to_its_key(api):
    with _http(api) as alice, _http(api, "bob") as bob, _http(api, None) as anonymous:
        with JFK.open("rb") as f:
            created = alice.post("/v1/jobs", files={"file": ("jfk.flac", f)}, data={"language": "en", "word_timestamps": "true"})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/transcript", f"/v1/jobs/{job_id}/events"):
            answer = bob.get(path)
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
        assert bob.delete(f"/v1/jobs/{job_id}").status_code == 404
        assert job_id not in [j["id"] for j in bob.get("/v1/jobs").json()["data"]]
        assert anonymous.get(f"/v1/jobs/{job_id}").status_code == 401
        wrong = anonymous.get(f"/v1/jobs/{job_id}", headers={"authorization": "Bearer mm-not-a-key"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"

        events, segments = [], []
        with alice.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                elif line.startswith("data: ") and events[-1] == "segment":
                    segments.append(json.loads(line.removeprefix("data: ")))
        assert events[-1] == "done" and set(events[:-1]) <= {"progress", "segment"}
        assert events.index("done") > max(i for i, e in enumerate(events) if e == "segment")  # the text before the end
        final = alice.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}).json()["segments"]
        assert [(s["start"], s["text"]) for s in segments] == [(s["start"], s["text"]) for s in final]
        job = alice.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "done" and job["chunks_done"] == job["chunks_total"] == 1 and job["language"] == "en"
        assert job_id in [j["id"] for j in alice.get("/v1/jobs").json()["data"]]
        vtt = alice.get(f"/v1/jobs/{job_id}/transcript", params={"format": "vtt"})
        assert vtt.headers["content-type"].startswith("text/plain") and vtt.text.startswith("WEBVTT")
        verbose = alice.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}).json()
        assert verbose["words"] and word_error_rate(JFK_TEXT, verbose["text"]) <= 0.1

        upload = queries.get_job(api.db, job_id).source
        assert Path(upload).parent == api.uploads and Path(upload).exists()
        deleted = alice.delete(f"/v1/jobs/{job_id}").json()
        assert deleted == {"id": job_id, "object": "job", "deleted": True, "cancelled": False}
        assert alice.get(f"/v1/jobs/{job_id}").status_code == 404
        assert queries.get_job(api.db, job_id) is None and not Path(upload).exists()


def test_an_upload_over_the_limit_is_refused_while_it_streams(api):
    before = len(queries.jobs_of(api.db, None, 1000)) + sum(len(queries.jobs_of(api.db, o, 1000)) for o in _owners(api))
    big = os.urandom(MAX_BYTES + 1024 * 1024)
    with _http(api) as alice:
        for path in ("/v1/audio/transcriptions", "/v1/jobs"):
            answer = alice.post(path, files={"file": ("big.wav", big)}, data={"model": "whisper-1"})
            assert answer.status_code == 413, answer.text
            assert answer.json()["error"]["code"] == "file_too_large"
    assert list(api.uploads.iterdir()) == []
    after = len(queries.jobs_of(api.db, None, 1000)) + sum(len(queries.jobs_of(api.db, o, 1000)) for o in _owners(api))
    assert after == before


def _owners(api) -> list[str]:
    return [k.id for k in queries.list_keys(api.db)]


def test_bad_requests_get_openai_shaped_errors_and_bad_audio_fails_its_job(api):
    client = _client(api)
    cases = [({"model": "whisper-1", "prompt": "Kennedy " * 300}, "invalid_value"),
             ({"model": "whisper-1", "temperature": 0.4}, "unsupported_parameter"),
             ({"model": "large-v9"}, "model_not_found"),
             ({"model": "whisper-1", "language": "xx"}, "invalid_value"),
             ({"model": "whisper-1", "response_format": "json", "timestamp_granularities": ["word"]}, "invalid_value")]
    for kwargs, code in cases:
        with JFK.open("rb") as f, pytest.raises(openai.BadRequestError) as raised:
            client.audio.transcriptions.create(file=f, **kwargs)
        assert raised.value.body["code"] == code, (kwargs, raised.value.body)
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.transcriptions.create(model="whisper-1", file=("notes.wav", b"this is text, not audio" * 20))
    assert raised.value.body["code"] == "job_failed" and "audio" in raised.value.body["message"].lower()
    with _http(api) as alice:
        refused = alice.post("/v1/jobs", json={"source": "/etc/passwd"})
        assert refused.status_code == 400 and "s3://" in refused.json()["error"]["message"]
        unknown = alice.post("/v1/jobs", json={"source": "s3://b/k.wav", "colour": "red"})
        assert unknown.status_code == 400 and "colour" in unknown.json()["error"]["message"]
        assert alice.get("/v1/nothing").json()["error"]["code"] == "not_found"
        # the speaker options are checked by the same code as every other door's
        for fields, reason in ([{"diarize": "true", "speakers": "0"}, "speakers"],
                               [{"speakers": "2"}, "give --diarize too"],
                               [{"diarize": "true", "min_speakers": "3", "max_speakers": "2"}, "more than --max-speakers 2"]):
            with JFK.open("rb") as f:
                answer = alice.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", f)}, data={"model": "whisper-1", **fields})
            assert answer.status_code == 400 and reason in answer.json()["error"]["message"], answer.text
        crossed = alice.post("/v1/jobs", json={"source": "s3://b/k.wav", "diarize": True, "min_speakers": 3, "max_speakers": 2})
        assert crossed.status_code == 400 and "more than --max-speakers 2" in crossed.json()["error"]["message"]
        with JFK.open("rb") as f:  # a tenant names no file on the server, not even as a reference clip
            peeking = alice.post("/v1/jobs", files={"file": ("jfk.flac", f)},
                                 data={"diarize": "true", "known_speaker_names": "Eve", "known_speaker_references": str(JFK)})
        assert peeking.status_code == 400 and "data: URL" in peeking.json()["error"]["message"]
    assert list(api.uploads.iterdir()) == []


def test_a_key_may_hold_only_its_number_of_jobs_and_a_cancel_frees_the_workers(api):
    """carol may hold one job: a second is 429. Deleting her 5-minute job mid-decode cancels it and
    removes it at once, in one request; the GPU worker skips its queued chunks and goes on to other jobs."""
    store = redis.Redis.from_url(STORE_URL)
    with _http(api, "carol") as carol, _http(api) as alice:
        with (DATA / "en_5min.flac").open("rb") as f:
            long = carol.post("/v1/jobs", files={"file": ("talk.flac", f)}, data={"language": "en"}).json()["id"]
        with JFK.open("rb") as f:
            second = carol.post("/v1/jobs", files={"file": ("jfk.flac", f)})
        assert second.status_code == 429 and second.json()["error"]["type"] == "rate_limit_exceeded"
        deadline = time.monotonic() + 180
        while (job := carol.get(f"/v1/jobs/{long}").json())["chunks_done"] < 1:
            assert job["status"] == "running" or job["status"] == "queued", job
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        upload = queries.get_job(api.db, long).source
        cancelled = carol.delete(f"/v1/jobs/{long}").json()
        assert cancelled == {"id": long, "object": "job", "deleted": True, "cancelled": True}
        assert job["chunks_done"] < job["chunks_total"] - 4  # it was cut off mid-decode
        assert carol.get(f"/v1/jobs/{long}").status_code == 404 and queries.get_job(api.db, long) is None
        assert carol.delete(f"/v1/jobs/{long}").status_code == 404
        started = time.monotonic()
        with JFK.open("rb") as f:
            after = alice.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", f)}, data={"model": "whisper-1"})
        assert after.status_code == 200 and word_error_rate(JFK_TEXT, after.json()["text"]) <= 0.1
        took = time.monotonic() - started
        deadline = time.monotonic() + 60
        while list(store.scan_iter(f"murmur:feat:{long}:*")):
            assert time.monotonic() < deadline, "the cancelled job's tensors were never dropped"
            time.sleep(0.5)
        assert took < 60, took  # the worker did not go on decoding the deleted job's chunks first
        assert queries.get_segments(api.db, long) == []  # nor stored any it had in hand
        assert not Path(upload).exists()  # its upload went with it
        # the key holds no job now: it may submit again
        with JFK.open("rb") as f:
            assert carol.post("/v1/jobs", files={"file": ("jfk.flac", f)}).status_code == 202


def test_a_keys_webhooks_are_signed_with_its_own_secret(api):
    """alice's job's hook verifies with alice's secret, shown once when her key was made, and with no
    other: bob, who receives hooks too, cannot forge hers (one fleet-wide secret let every tenant)."""
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    hooks = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    try:
        with _http(api) as alice, JFK.open("rb") as f:
            job_id = alice.post("/v1/jobs", files={"file": ("jfk.flac", f)},
                                data={"callback_url": f"http://127.0.0.1:{hooks.server_port}/hook", "language": "en"}).json()["id"]
        deadline = time.monotonic() + 120
        while not received:
            assert time.monotonic() < deadline, "no hook came"
            time.sleep(0.2)
    finally:
        hooks.shutdown()
    [(headers, body)] = received
    signed = headers["X-Murmur-Timestamp"].encode() + b"." + body
    signatures = {name: "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
                  for name, secret in {**api.secrets, "fleet": api.env["MURMUR_CALLBACK_SECRET"]}.items()}
    assert headers["X-Murmur-Signature"] == signatures["alice"] and list(signatures.values()).count(signatures["alice"]) == 1
    assert headers["X-Murmur-Delivery"] == job_id and json.loads(body)["status"] == "done"


def test_the_openapi_document_holds_against_the_running_server(api, tmp_path):
    """schemathesis (PyPI) sends generated requests, valid and not, to every operation and checks each
    answer against the document: no 5xx, only documented statuses, bodies and content types, a key required.
    Left out: positive_data_acceptance, as no schema can say which bytes decode as audio (a random
    `file` is a valid request whose job fails: 400)."""
    spec = json.loads(urllib.request.urlopen(api.url + "/openapi.json").read())
    assert {"/v1/audio/transcriptions", "/v1/audio/translations", "/v1/models", "/v1/jobs", "/v1/jobs/{job_id}",
            "/v1/jobs/{job_id}/transcript", "/v1/jobs/{job_id}/events"} <= set(spec["paths"])
    done = subprocess.run([str(BIN / "schemathesis"), "run", f"{api.url}/openapi.json", "--max-examples", "15",
                           "-H", f"Authorization: Bearer {api.keys['bob']}", "--seed", "1",
                           "--request-timeout", "120", "--no-color",
                           "--exclude-checks", "positive_data_acceptance"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert api.server.proc.poll() is None


def test_without_keys_the_server_binds_only_to_loopback(tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path)}
    refused = run_cli("serve", "--embedded", "--host", "0.0.0.0", "--port", str(_free_port()), env=env, timeout=60)
    assert refused.returncode == 1 and "no API key exists" in refused.stderr and "murmur keys create" in refused.stderr


@pytest.fixture(scope="module")
def embedded_api(tmp_path_factory):
    home = tmp_path_factory.mktemp("embedded-home")
    env = {**os.environ, "XDG_DATA_HOME": str(home), "MURMUR_DEVICE": "cpu"}
    env.pop("MURMUR_DATABASE_URL", None)
    server = Server(env, home / "serve.log", "--embedded")
    try:
        yield type("Embedded", (), {"url": server.url, "keys": {"alice": "unused: no key on loopback"}, "home": home})
    finally:
        server.stop()


def test_embedded_mode_answers_the_same_endpoints_with_no_broker(embedded_api):
    _check_formats(_client(embedded_api))
    with _http(embedded_api) as anyone:
        with (DATA / "mls_spanish_13697_11991_000000.opus").open("rb") as f:
            job_id = anyone.post("/v1/jobs", files={"file": ("es.opus", f)}).json()["id"]
        with JFK.open("rb") as f:
            hooked = anyone.post("/v1/jobs", files={"file": ("jfk.flac", f)}, data={"callback_url": "https://example.org/h"})
        assert hooked.status_code == 400 and "fleet" in hooked.json()["error"]["message"]
        deadline = time.monotonic() + 120
        while (job := anyone.get(f"/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["status"] == "done" and job["language"] == "es"
        text = anyone.get(f"/v1/jobs/{job_id}/transcript", params={"format": "text"}).text
        reference = (DATA / "mls_spanish_13697_11991_000000.txt").read_text()
        assert word_error_rate(reference, text) <= 0.35
    ann = "data:audio/ogg;base64," + base64.b64encode((DATA / "known_speaker_ls3080.ogg").read_bytes()).decode()
    with _http(embedded_api) as anyone, (DATA / "dev_conv_en_3spk_female.flac").open("rb") as f:
        diarized = anyone.post("/v1/audio/transcriptions", files={"file": ("talk.flac", f)}, timeout=300,
                               data={"model": "whisper-1", "language": "en", "response_format": "diarized_json",
                                     "known_speaker_names[]": ["Ann"], "known_speaker_references[]": [ann]})
    assert diarized.status_code == 200, diarized.text
    segments = diarized.json()["segments"]
    assert {s["speaker"] for s in segments} == {"Ann", "S2", "S3"}
    assert all(s["type"] == "transcript.text.segment" and s["id"].startswith("seg_") for s in segments)
    # a page's names for the speakers, in its downloads
    talk = diarized.headers["x-murmur-job"]
    with _http(embedded_api) as anyone:
        srt = anyone.get(f"/v1/jobs/{talk}/transcript", params={"format": "srt", "rename": ["S2:Bob", "S3:Cy", "Ann:Di"]}).text
        vtt = anyone.get(f"/v1/jobs/{talk}/transcript", params={"format": "vtt", "rename": ["S2:Bob"]}).text
        for bad in ("S2:<b>", "S2:", "S2", "S2:a\nb"):
            refused = anyone.get(f"/v1/jobs/{talk}/transcript", params={"format": "srt", "rename": [bad]})
            assert refused.status_code == 400 and "rename" in refused.json()["error"]["message"], bad
        # the recording of a job made from an upload, to play beside its transcript; none for a request answered
        audio = anyone.get(f"/v1/jobs/{job_id}/audio")
        assert audio.status_code == 200 and audio.content == (DATA / "mls_spanish_13697_11991_000000.opus").read_bytes()
        assert anyone.get(f"/v1/jobs/{talk}/audio").status_code == 404
        page = anyone.post("/v1/jobs", files={"file": ("page.html", b"<script>alert(1)</script>")}).json()["id"]
        served = anyone.get(f"/v1/jobs/{page}/audio")  # never as a page of this server, whatever its name says
        assert served.headers["content-type"] == "application/octet-stream"
        assert served.headers["content-disposition"].startswith("attachment") and "sandbox" in served.headers["content-security-policy"]
        assert anyone.delete(f"/v1/jobs/{page}").status_code == 200
    assert "Bob: " in srt and "Cy: " in srt and "Di: " in srt and not {"S2", "S3", "Ann"} & set(re.findall(r"\w+", srt))
    assert "<v Bob>" in vtt and "<v S3>" in vtt
    # the answered requests' uploads are gone; the job's stays until the job is deleted
    assert [p.name for p in (embedded_api.home / "murmur" / "uploads").iterdir()] == [f"{job_id}.opus"]
