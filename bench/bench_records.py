"""A year of records: what the fleet asks on every tick, against a Postgres that holds a year of jobs.

Builds (in SQL, with generate_series) a database of its own: 1,000,000 jobs
that ended over the past year (nine in ten done, one in ten failed), with
5,000,000 segments and 2,000,000 chunk rows; 3,000 jobs running, 10 chunks each,
held by live leases; and an API key whose jobs are 100,000 of them. Then,
median of `--runs` each (and the slowest):

- the autoscaler's backlog queries (`BACKLOG_SQL`, as KEDA sends them)
- the exporter's scrape (every metric, `FleetCollector.collect`)
- a reconciler pass (`Reconciler.tick`: reads everything it decides on)
- `GET /v1/jobs` of that key through a running `murmur serve`: the first page,
  and the page 50,000 jobs deep (`after=`)
- `murmur prune --older-than 182d` (half the rows), while the same per-tick
  work is timed every 100 ms: the slowest of each while prune ran.

Targets (issue "a year of records"): backlog ≤ 50 ms, scrape ≤ 1 s, a page
≤ 200 ms, reconciler pass ≤ 200 ms, prune without blocking the fleet (no tick
past its own target while it runs). It also prints what a job, a chunk and a
segment take in Postgres, and, per hour of the shared audio, the chunks and
segments it makes and the bytes of each message and tensor that cross Redis:
docs/capacity.md builds on these. Needs the machine's Postgres and Redis,
../shared/audio, ~3 GB of disk and ~10 minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOBS, SEGMENTS_PER_JOB, CHUNKS_PER_JOB = 1_000_000, 5, 2
RUNNING, RUNNING_CHUNKS = 3_000, 10
KEY_JOBS = 100_000  # every tenth job is the big key's
TARGETS_MS = {"backlog (cpu)": 50, "backlog (gpu)": 50, "exporter scrape": 1000, "reconciler pass": 200,
              "GET /v1/jobs, first page": 200, "GET /v1/jobs, 50,000 deep": 200}

BUILD = [
    # ended jobs over a year: the first is the newest; every tenth failed, every tenth (another) the big key's
    f"""INSERT INTO jobs (id, status, source, options, language, language_probability, duration, n_chunks, chunks_done,
        prepare_seconds, detect_seconds, decode_seconds, error, failure, owner, priority, attempts, callback_attempts,
        created_at, started_at, finished_at, progress_at)
    SELECT md5('job' || i), CASE WHEN i % 10 = 3 THEN 'failed' ELSE 'done' END, '/data/uploads/' || md5('job' || i) || '.flac',
        '{{"model": "base", "task": "transcribe", "multilingual": false, "output_language": "hybrid", "batch_size": 8,
           "beam_size": 5, "word_timestamps": false, "seed": 0, "language": null}}'::json,
        'en', 0.97, 30 + (i % 600), {CHUNKS_PER_JOB}, {CHUNKS_PER_JOB}, 0.4 + (i % 7) * 0.1, 0.2, 1.5 + (i % 13) * 0.3,
        CASE WHEN i % 10 = 3 THEN 'not a readable audio file: x.wav (Invalid data)' END,
        CASE WHEN i % 10 = 3 THEN 'input' END,
        CASE WHEN i % 10 = 1 THEN :key END, 0, 0, 0,
        now() - (i * interval '31.5 seconds'), now() - (i * interval '31.5 seconds') + interval '1 second',
        now() - (i * interval '31.5 seconds') + interval '20 seconds', now() - (i * interval '31.5 seconds') + interval '20 seconds'
    FROM generate_series(1, {JOBS}) AS i""",
    f"""INSERT INTO segments (job_id, chunk_idx, idx, start, "end", text, language, avg_logprob, no_speech_prob, compression_ratio)
    SELECT md5('job' || i), s / 3, s % 3, s * 5.0, s * 5.0 + 4.5,
        'And so my fellow Americans, ask not what your country can do for you, ask what you can do.',
        'en', -0.21, 0.01, 1.4
    FROM generate_series(1, {JOBS}) AS i, generate_series(0, {SEGMENTS_PER_JOB - 1}) AS s""",
    f"""INSERT INTO chunks (job_id, idx, start, "end", spans, speech, language, status, worker, attempts)
    SELECT md5('job' || i), c, c * 30.0, c * 30.0 + 29.5, ('[[' || c * 30.0 || ', ' || (c * 30.0 + 29.5) || ']]')::json,
        ('[[' || c * 30.0 + 0.2 || ', ' || (c * 30.0 + 14.0) || '], [' || (c * 30.0 + 15.0) || ', ' || (c * 30.0 + 29.0) || ']]')::json,
        'en', 'decoded', 'gpu-1@host', 0
    FROM generate_series(1, {JOBS}) AS i, generate_series(0, {CHUNKS_PER_JOB - 1}) AS c""",
    # running jobs, each in a live worker's hands: the reconciler reads them all and re-drives none
    f"""INSERT INTO jobs (id, status, source, options, language, duration, n_chunks, chunks_done, prepare_seconds,
        detect_seconds, decode_seconds, priority, attempts, callback_attempts, created_at, started_at, progress_at)
    SELECT md5('run' || i), 'running', '/data/uploads/' || md5('run' || i) || '.flac', '{{"model": "base"}}'::json, 'en',
        300, {RUNNING_CHUNKS}, 4, 0.5, 0.2, 2.0, 0, 0, 0, now() - interval '2 minutes', now() - interval '2 minutes', now()
    FROM generate_series(1, {RUNNING}) AS i""",
    f"""INSERT INTO chunks (job_id, idx, start, "end", spans, speech, status, attempts, lease_worker, lease_until)
    SELECT md5('run' || i), c, c * 30.0, c * 30.0 + 29.5, '[[0, 29.5]]'::json, '[[0.2, 29.0]]'::json,
        CASE WHEN c < 4 THEN 'decoded' ELSE 'pending' END, 0,
        CASE WHEN c < 4 THEN NULL ELSE 'gpu-1@host/abc' END, CASE WHEN c < 4 THEN NULL ELSE now() + interval '1 hour' END
    FROM generate_series(1, {RUNNING}) AS i, generate_series(0, {RUNNING_CHUNKS - 1}) AS c""",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="murmur_records")
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="reuse the database a run before built")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    url = args.admin_url.rsplit("/", 1)[0] + "/" + args.database
    env = {**os.environ, "MURMUR_DATABASE_URL": url, "MURMUR_BROKER_URL": args.broker_url, "MURMUR_RETENTION": "0"}
    os.environ.update({k: env[k] for k in ("MURMUR_DATABASE_URL", "MURMUR_BROKER_URL", "MURMUR_RETENTION")})

    from murmur.api.auth import digest
    from murmur.db import queries
    from murmur.db.session import sessions
    from murmur.settings import get_settings
    from murmur.tasks.fleet.reconciler import Reconciler
    from murmur.tasks.operations.exporter import BACKLOG_SQL, FleetCollector

    key = "mm-bench-records-key"
    if not args.keep:
        admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)"))
        admin.dispose()
        subprocess.run([str(BIN / "murmur"), "db", "upgrade"], env=env, check=True, capture_output=True)
        db = sessions(url)
        owner = queries.create_key(db, "big", digest(key), max_jobs=1000).id
        started = time.perf_counter()
        engine = create_engine(url)
        with engine.begin() as conn:
            for statement in BUILD:
                conn.execute(text(statement), {"key": owner})
        with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text("VACUUM ANALYZE"))
        print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
    db = sessions(url)
    settings = get_settings()
    sizes = _sizes(url)

    collector = FleetCollector(db, settings)
    reconciler = Reconciler(db, settings, lambda queue: 0)

    def backlog(kind: str):
        return lambda: _scalar(db, BACKLOG_SQL[kind])

    work = {"backlog (cpu)": backlog("cpu"), "backlog (gpu)": backlog("gpu"),
            "exporter scrape": lambda: list(collector.collect()), "reconciler pass": reconciler.tick}
    timings = {name: _timed(call, args.runs) for name, call in work.items()}

    port = _free_port()
    server = subprocess.Popen([str(BIN / "murmur"), "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(base + "/healthz")
        with httpx.Client(base_url=base, headers={"authorization": f"Bearer {key}"}) as http:
            deep = _scalar(db, "SELECT id FROM jobs WHERE owner = (SELECT id FROM api_keys WHERE name = 'big') "
                               "ORDER BY created_at DESC, id DESC OFFSET 50000 LIMIT 1")
            first = http.get("/v1/jobs", params={"limit": 20}).json()
            assert len(first["data"]) == 20 and first["has_more"], first
            timings["GET /v1/jobs, first page"] = _timed(lambda: http.get("/v1/jobs", params={"limit": 20}).raise_for_status(),
                                                         args.runs)
            timings["GET /v1/jobs, 50,000 deep"] = _timed(
                lambda: http.get("/v1/jobs", params={"limit": 20, "after": deep}).raise_for_status(), args.runs)
    finally:
        server.terminate()
        server.wait(20)

    during: dict[str, list[float]] = {name: [] for name in work}
    done = threading.Event()

    def tick_meanwhile() -> None:
        while not done.is_set():
            for name, call in work.items():
                started = time.perf_counter()
                call()
                during[name].append((time.perf_counter() - started) * 1000)
            done.wait(0.1)

    watcher = threading.Thread(target=tick_meanwhile, daemon=True)
    before = _scalar(db, "SELECT count(*) FROM jobs")
    started = time.perf_counter()
    watcher.start()
    pruned = subprocess.run([str(BIN / "murmur"), "prune", "--older-than", "182d"], env=env, capture_output=True, text=True)
    prune_seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    after = _scalar(db, "SELECT count(*) FROM jobs")
    traffic = _per_hour_of_audio(args.broker_url)
    report = _render(timings, during, sizes, prune_seconds, before, after, pruned.stdout.strip(), args) + traffic
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    (args.out / f"records-{stamp}.md").write_text(report)


def _per_hour_of_audio(broker_url: str) -> str:
    """Chunks per hour of the shared speech (the VAD and the chunker, as a CPU worker runs them), and the
    bytes of each message and tensor the fleet sends through Redis for them."""
    import json

    import numpy as np
    import redis

    from murmur.tasks import jobs as submit
    from murmur.tasks.fleet import chain  # noqa: F401 - the tasks, for the app to send by name
    from murmur.tasks.fleet.app import create_app
    from murmur.tasks.fleet.deliveries import headers
    from murmur.tasks.tensors.store import TensorRef, feature_key
    from murmur.workers.cpu.audio import SAMPLE_RATE, stream_audio
    from murmur.workers.cpu.chunking import plan_heard
    from murmur.workers.cpu.vad import SileroVad
    from murmur.workers.window import N_FRAMES

    audio = ROOT.parent / "shared" / "audio"
    files = sorted(p for folder in ("real", "tts") for p in (audio / folder).rglob("*")
                   if p.suffix in (".flac", ".wav", ".mp3", ".opus", ".ogg") and "silence" not in p.parts)
    vad, seconds, chunks, speech = SileroVad(), 0.0, 0, 0.0
    long_file = None  # en_5min: a long recording's chunks per hour, where the clips' set is mostly short files
    for path in files:
        blocks = list(stream_audio(str(path)))
        duration = sum(b.size for b in blocks) / SAMPLE_RATE
        planned = plan_heard(vad.each(blocks), duration)
        seconds += duration
        chunks += len(planned)
        speech += sum(b - a for c in planned for a, b in c.spans)
        if path.name == "en_5min.flac":
            long_file = len(planned) * 3600 / duration
    app = create_app(broker_url)
    queue = "murmur.bench.sizes"
    client = redis.Redis.from_url(broker_url)
    client.delete(queue)
    job_id = submit.job_id_of(None)
    ref = TensorRef(feature_key(job_id, 3), (80, N_FRAMES), "float32")
    kwargs = {"source": "/data/uploads/" + job_id + ".flac", "language": None, "model": "base", "callback_url": None,
              "priority": None}
    for name, args, extra in (("murmur.transcribe", (), kwargs), ("murmur.prepare", (job_id,), {}),
                              ("murmur.decode", (job_id, ref.to_json()), {}), ("murmur.assemble", (job_id,), {})):
        app.send_task(name, args=args, kwargs=extra, queue=queue, headers=headers(0), ignore_result=True)
    sizes = [len(m) for m in client.lrange(queue, 0, -1)][::-1]
    client.delete(queue)
    prepared = _prepare_rate(audio / "tts" / "en_5min.flac")
    names = ("transcribe", "prepare", "decode", "assemble")
    per_hour = chunks * 3600 / seconds
    tensor = 80 * N_FRAMES * np.dtype(np.float32).itemsize
    lines = ["", f"Per hour of audio, from the {len(files)} files of ../shared/audio/real and tts ({seconds / 60:.0f} min): "
             f"{per_hour:.0f} chunks (speech {100 * speech / seconds:.0f}% of the time, chunks of "
             f"{speech / max(chunks, 1):.1f} s on average: short clips are a chunk each); a long recording, en_5min, "
             f"{long_file:.0f} per hour. Each chunk's features are {tensor:,} bytes in Redis (base, 80 mels; "
             "large-v3's 128 mels: 1.6 times that).", "",
             "| message | bytes in Redis |", "|---|---:|"]
    lines += [f"| murmur.{n} | {b:,} |" for n, b in zip(names, sizes)]
    lines += ["", f"A CPU worker's prepare (decode, VAD, chunks, features), one thread as a CPU worker runs it, on "
                  f"en_5min: {prepared:.0f}x real time."]
    return "\n".join(lines) + "\n" + json.dumps({"chunks_per_hour": per_hour, "long_file_chunks_per_hour": long_file,
                                                  "tensor_bytes": tensor, "messages": dict(zip(names, sizes))}) + "\n"


def _prepare_rate(path: Path) -> float:
    """Audio seconds prepared per second on one thread (a fresh process, BLAS on one thread as a CPU worker sets it)."""
    script = f"""
import os, tempfile, time
from murmur.db.session import sessions, upgrade
from murmur.db import queries
from murmur.tasks import stages
from murmur.tasks.context import Context
url = "sqlite:///" + tempfile.mkdtemp() + "/p.db"
upgrade(url)
ctx = Context(db=sessions(url), device="cpu", threads=1)
ctx.vad
best = None
for _ in range(3):
    job = queries.create_job(ctx.db, {str(path)!r}, {{"model": "base", "language": "en"}})
    started = time.perf_counter()
    stages.prepare(ctx, job)
    took = time.perf_counter() - started
    best = took if best is None else min(best, took)
print(queries.get_job(ctx.db, job).duration / best)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    return float(done.stdout.strip().splitlines()[-1])


def _scalar(db, sql: str):
    with db() as s:
        return s.scalar(text(sql))


def _timed(call, runs: int) -> list[float]:
    """Milliseconds of each of `runs` calls, after one to warm the caches and the connection."""
    call()
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def _sizes(url: str) -> dict[str, tuple[int, int]]:
    """Each table's rows and bytes on disk, its indexes and TOAST included."""
    engine = create_engine(url)
    with engine.connect() as conn:
        return {table: (conn.scalar(text(f"SELECT count(*) FROM {table}")),
                        conn.scalar(text(f"SELECT pg_total_relation_size('{table}')")))
                for table in ("jobs", "chunks", "segments")}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=2).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer")
            time.sleep(0.2)


def _render(timings, during, sizes, prune_seconds, before, after, pruned, args) -> str:
    lines = [f"# A year of records, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"`python bench/bench_records.py --runs {args.runs}`: Postgres 15 on this machine (2 cores), "
             f"{JOBS:,} ended jobs over a year, {JOBS * SEGMENTS_PER_JOB:,} segments, {JOBS * CHUNKS_PER_JOB:,} chunks, "
             f"{RUNNING:,} running jobs with {RUNNING_CHUNKS} chunks each, one key with {KEY_JOBS:,} jobs.", "",
             "| what | median ms | slowest ms | target ms | met |", "|---|---:|---:|---:|---|"]
    for name, values in timings.items():
        lines.append(f"| {name} | {statistics.median(values):.1f} | {max(values):.1f} | {TARGETS_MS[name]} | "
                     f"{'yes' if max(values) <= TARGETS_MS[name] else 'NO'} |")
    lines += ["", f"`murmur prune --older-than 182d`: {pruned}, {before:,} jobs before, {after:,} after, "
                  f"in {prune_seconds:.0f} s. The per-tick work, timed every 100 ms meanwhile:", "",
              "| while prune ran | runs | median ms | slowest ms | target ms | met |", "|---|---:|---:|---:|---:|---|"]
    for name, values in during.items():
        if values:
            lines.append(f"| {name} | {len(values)} | {statistics.median(values):.1f} | {max(values):.1f} | "
                         f"{TARGETS_MS[name]} | {'yes' if max(values) <= TARGETS_MS[name] else 'NO'} |")
    lines += ["", "Bytes on disk per row, indexes included (before the prune):", "", "| table | rows | bytes | per row |",
              "|---|---:|---:|---:|"]
    for table, (rows, size) in sizes.items():
        lines.append(f"| {table} | {rows:,} | {size:,} | {size / max(rows, 1):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
