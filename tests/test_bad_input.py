"""A catalogue of bad input, sent as any Celery client would (raw `murmur.transcribe` kwargs on
`murmur.cpu`), to real workers on real Redis and Postgres. Each kind must end its own job
`failed` with a reason a person can act on; the workers live on and a good job sent among
them is transcribed as usual."""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import redis

from murmur.settings import get_settings
from murmur.tasks.fleet.client import Client, JobFailed
from tests.conftest import DATA, fresh_postgres, run_cli, words
from tests.test_distributed import Worker

pytestmark = [pytest.mark.services, pytest.mark.weights]
BROKER_URL = "redis://127.0.0.1:6379/10"
LIMITS = {"MURMUR_MAX_DURATION": "600", "MURMUR_MAX_BYTES": "8M"}
JFK = str(DATA / "jfk_inaugural_1961.flac")


def _silence_flac(path: Path, seconds: int) -> None:
    """Minutes of digital silence: a few kB of FLAC that decodes to far more samples than the limit allows."""
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=16000, layout="mono")
        block = np.zeros((1, 16000), dtype=np.int16)
        for i in range(seconds):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.rate, frame.pts = 16000, i * 16000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _noise_wav(path: Path, seconds: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(np.random.default_rng(0).integers(-3000, 3000, seconds * 48000 * 2, dtype=np.int16).tobytes())


def _video_only(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _files(root: Path) -> dict[str, str]:
    """Bad files on disk, by kind."""
    (root / "notes.wav").write_text("this is not audio, only text pretending to be a wav file")
    (root / "empty.flac").write_bytes(b"")
    (root / "truncated.flac").write_bytes(Path(JFK).read_bytes()[:2000])
    (root / "random.mp3").write_bytes(random.Random(0).randbytes(64 * 1024))
    header = io.BytesIO()
    with wave.open(header, "wb") as w:  # a WAV header with nothing after it
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    (root / "header_only.wav").write_bytes(header.getvalue())
    _silence_flac(root / "eleven_minutes_of_silence.flac", 660)
    _noise_wav(root / "nine_megabytes.wav", 50)
    _video_only(root / "video_only.mp4")
    (root / "a_folder.wav").mkdir()
    return {p.name: str(p) for p in root.iterdir()}


# kind: (raw kwargs of murmur.transcribe, a regular expression its job's error must match)
CATALOGUE = {
    "text file named .wav": ({"source": "@notes.wav"}, r"not a readable audio file: notes\.wav"),
    "empty file": ({"source": "@empty.flac"}, r"file is empty: .*empty\.flac"),
    "truncated FLAC": ({"source": "@truncated.flac"}, r"truncated\.flac"),
    "random bytes as .mp3": ({"source": "@random.mp3"}, r"not a readable audio file: random\.mp3"),
    "WAV header with no samples": ({"source": "@header_only.wav"}, r"header_only\.wav"),
    "video with no audio stream": ({"source": "@video_only.mp4"}, r"video_only\.mp4 \(no audio stream\)"),
    "11 minutes of silence past MURMUR_MAX_DURATION": (
        {"source": "@eleven_minutes_of_silence.flac"}, r"longer than the limit of 600 s \(MURMUR_MAX_DURATION\)"),
    "file past MURMUR_MAX_BYTES": ({"source": "@nine_megabytes.wav"}, r"larger than the limit of .*\(MURMUR_MAX_BYTES\)"),
    "a directory": ({"source": "@a_folder.wav"}, r"a_folder\.wav"),
    "missing file": ({"source": "{root}/gone.flac"}, r"no such file"),
    "outside MURMUR_ALLOWED_ROOTS": ({"source": "/etc/hostname"}, r"outside MURMUR_ALLOWED_ROOTS"),
    "relative path": ({"source": "talk.wav"}, r"relative: workers need an absolute path"),
    "path with a NUL byte": ({"source": "{root}/a\x00b.wav"}, r"NUL"),
    "http:// URL": ({"source": "http://example.com/talk.wav"}, r"unsupported source"),
    "s3:// URI with no bucket": ({"source": "s3://"}, r"s3"),
    "no source at all": ({}, r"the job names no source"),
    "source that is a number": ({"source": 42}, r"the job names no source"),
    "language as a name": ({"source": JFK, "language": "english"}, r"english"),
    "language as a number": ({"source": JFK, "language": 5}, r"language"),
    "unknown task": ({"source": JFK, "task": "summarize"}, r"summarize"),
    "beam size as a word": ({"source": JFK, "beam_size": "five"}, r"beam"),
    "beam size 0": ({"source": JFK, "beam_size": 0}, r"invalid beam size"),
    "beam size 1000": ({"source": JFK, "beam_size": 1000}, r"beam size"),
    "model that does not exist": ({"source": JFK, "model": "large-v9"}, r"large-v9"),
    "model as a directory outside MURMUR_MODEL_DIRS": ({"source": JFK, "model": "/etc"}, r"model"),
    "unknown option": ({"source": JFK, "colour": "red"}, r"unknown option\(s\): colour"),
    "seed as a list": ({"source": JFK, "seed": [1]}, r"seed"),
    "prompt as a number": ({"source": JFK, "prompt": 5}, r"invalid prompt 5: use text"),
    "prompt past the decoder's budget": ({"source": JFK, "prompt": "Kennedy " * 300}, r"Whisper reads at most 223"),
    "hotwords as a list": ({"source": JFK, "hotwords": ["a", "b"]}, r"invalid hotwords"),
    "word_timestamps as a string": ({"source": JFK, "word_timestamps": "yes"}, r"invalid word timestamps 'yes'"),
    "negative batch size": ({"source": JFK, "batch_size": -1}, r"batch"),
    "priority out of range": ({"source": JFK, "priority": 42}, r"invalid priority 42"),
    "priority as a word": ({"source": JFK, "priority": "high"}, r"invalid priority 'high'"),
    "ftp:// callback": ({"source": JFK, "callback_url": "ftp://example.com/hook"}, r"invalid callback URL"),
    "callback with credentials": (
        {"source": JFK, "callback_url": "https://user:secret@example.com/hook"}, r"credentials in the URL"),
    "callback as a number": ({"source": JFK, "callback_url": 7}, r"invalid callback URL"),
}
# the class each failure is recorded with, where it is not "input" (the submitter's to fix)
FAILURES = {
    "11 minutes of silence past MURMUR_MAX_DURATION": "limit",
    "file past MURMUR_MAX_BYTES": "limit",
    "missing file": "source",
    "outside MURMUR_ALLOWED_ROOTS": "forbidden",
    "model that does not exist": "forbidden",  # a fleet answers alike whether or not such a path exists
    "model as a directory outside MURMUR_MODEL_DIRS": "forbidden",
}


def _placed(value, root: Path, files: dict[str, str]):
    """"@name" is the bad file of that name; "{root}" the folder they lie in."""
    if not isinstance(value, str):
        return value
    return files[value[1:]] if value.startswith("@") else value.replace("{root}", str(root))


@pytest.fixture(scope="module")
def sent(tmp_path_factory):
    """The whole catalogue and one good job, sent at once to one CPU and one GPU-queue worker."""
    logs = tmp_path_factory.mktemp("bad-input-logs")
    root = tmp_path_factory.mktemp("bad-inputs")
    files = _files(root)
    database_url = fresh_postgres("murmur_bad_input_test", create=False)
    redis.Redis.from_url(BROKER_URL).flushdb()
    env = {**os.environ, **LIMITS, "MURMUR_BROKER_URL": BROKER_URL, "MURMUR_DATABASE_URL": database_url,
           "MURMUR_ALLOWED_ROOTS": os.pathsep.join([str(DATA), str(root)]), "MURMUR_DEVICE": "cpu"}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    workers = [Worker("cpu", env, logs / "cpu.log"), Worker("gpu", env, logs / "gpu.log")]
    try:
        for worker in workers:
            worker.wait_for(" ready.")
        get_settings.cache_clear()
        client = Client(broker_url=BROKER_URL, database_url=database_url)
        pids = [w.proc.pid for w in workers]

        def send(kwargs: dict) -> str:
            kwargs = {k: _placed(v, root, files) for k, v in kwargs.items()}
            return client.app.send_task("murmur.transcribe", queue="murmur.cpu", kwargs=kwargs)

        results = {kind: send(kwargs) for kind, (kwargs, _) in CATALOGUE.items()}
        good = send({"source": str(DATA / "stereo_two_speakers.wav"), "language": "en"})
        jobs = {kind: result.get(timeout=60) for kind, result in results.items()}
        good_job = good.get(timeout=60)
        for job_id in jobs.values():
            with contextlib.suppress(JobFailed):
                client.wait(job_id, timeout=120)
        client.wait(good_job, timeout=120)
        yield type("Sent", (), {"client": client, "jobs": jobs, "good": good_job, "workers": workers, "pids": pids})
    finally:
        for worker in workers:
            worker.stop()


@pytest.mark.parametrize("kind", CATALOGUE)
def test_bad_input_fails_its_own_job_with_a_readable_reason(sent, kind):
    status = sent.client.status(sent.jobs[kind])
    assert status.status == "failed", status
    assert status.error and "Traceback" not in status.error and len(status.error) < 500, status.error
    assert re.search(CATALOGUE[kind][1], status.error), status.error
    assert status.failure == FAILURES.get(kind, "input"), (status.failure, status.error)


def test_the_workers_live_on_and_the_good_job_among_them_is_transcribed(sent):
    assert "curtain" in words(sent.client.result(sent.good).text)
    assert [w.proc.poll() for w in sent.workers] == [None, None]
    assert [w.proc.pid for w in sent.workers] == sent.pids
    after = sent.client.submit(str(DATA / "jfk_inaugural_1961.flac"), language="en")
    sent.client.wait(after, timeout=120)
    assert "country" in words(sent.client.result(after).text)
