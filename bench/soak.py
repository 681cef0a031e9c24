"""Soak: many jobs through a fleet that keeps being hurt, and what came out of it.

N jobs (default 60; real clips and synthetic files of several lengths and
languages) go to one CPU worker and two GPU-queue workers on a private
redis-server and a database of their own. While they run, a random worker is
SIGKILLed every ~20 s and started again, the Redis is restarted once (it keeps
nothing on disk) and the database refuses connections for 60 s once. Then, for
`--stream-seconds`, jobs keep coming, one every `--stream-every` seconds, so the
queues never drain, and the Redis is flushed once with the queues busy (every
queued message and tensor lost while new ones keep arriving). Every transcript
is then compared with the embedded runner's for the same file (its words: more
than 5% changed counts as differing). The GPU workers decode each chunk in a
window of its own (MURMUR_PACK_WINDOWS=false): packed, a clip's words depend on
which other jobs' chunks shared its window (the two overlapped voices of
stereo_two_speakers.wav change a third of theirs), and this comparison is here
to catch a chunk lost or stored twice.

Prints (and writes to bench/results/) submitted / done / failed with reason /
stuck / duplicated segments / transcripts differing from the embedded run, and
the longest time any job went without a visible step forward, overall and in
the stream (the queues' lengths sampled there too), and how long after the
flush the jobs it stranded were sent again.
Targets: stuck 0, duplicated 0, differing 0, every failure explained.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import jiwer
import redis
from sqlalchemy import create_engine, func, select, text

from bench_distributed import Fleet  # starts `murmur worker` processes and waits until they are ready

ROOT = Path(__file__).resolve().parents[1]
AUDIO = Path(os.environ.get("MURMUR_BENCH_AUDIO", ROOT.parent / "shared" / "audio"))
BIN = Path(sys.executable).parent
FILES = [  # (path under ../shared/audio, language): 4 s to 5 min, four languages
    ("real/en/jfk_inaugural_1961.flac", "en"),
    ("real/en/stereo_two_speakers.wav", "en"),
    ("real/es/mls_spanish_13697_11991_000000.opus", "es"),
    ("real/en/librivox_sense_sensibility_0870.wav", "en"),
    ("tts/de_1min.flac", "de"),
    ("tts/es_1min.flac", "es"),
    ("tts/en_de_codeswitch.flac", None),
    ("tts/en_5min.flac", "en"),
]
SETTINGS = {"MURMUR_LEASE_SECONDS": "10", "MURMUR_STALL_TIMEOUT": "30", "MURMUR_RECONCILE_INTERVAL": "3",
            "MURMUR_MAX_ATTEMPTS": "5", "MURMUR_PACK_WINDOWS": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SoakFleet(Fleet):
    """bench_distributed's fleet on a private redis-server, and the faults done to them."""

    def __init__(self, env: dict, logs: Path) -> None:
        super().__init__(env, logs)
        self.port = _free_port()
        self.redis_url = f"redis://127.0.0.1:{self.port}/0"
        self.env["MURMUR_BROKER_URL"] = self.redis_url
        self.events: list[str] = []
        self.started = 0
        self.start_redis()

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(self.logs)], stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.redis_url)
        for _ in range(400):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def flush_redis(self, queued: int) -> None:
        redis.Redis.from_url(self.redis_url).flushall()
        self.note(f"flushed Redis with {queued} messages queued (every queued message and tensor lost)")

    def restart_redis(self) -> None:
        self.redis.kill()
        self.redis.wait()
        self.start_redis()
        self.note("restarted Redis (nothing kept)")

    def start_worker(self, kind: str) -> None:
        """A worker under a new name (its own log) each time: `kind-N`. Like a supervisor, it tries
        again while the worker cannot start (it exits when the database is out of reach)."""
        deadline = time.monotonic() + 300
        while True:
            self.started += 1
            name = f"{kind}-{self.started}"
            try:
                self.start(name, kind)
                return
            except SystemExit:
                self.procs.pop(name).wait()
                if time.monotonic() > deadline:
                    raise
                self.note(f"{name} could not start; trying again")
                time.sleep(5)

    def kill_one(self, rng: random.Random) -> None:
        name = rng.choice(sorted(self.procs))
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.note(f"SIGKILLed {name}")
        self.start_worker(name.split("-")[0])

    def note(self, what: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {what}")
        print(self.events[-1], flush=True)

    def stop_all(self) -> None:
        super().stop_all()
        self.redis.kill()


def block_database(admin_url: str, database: str, seconds: float, fleet: Fleet) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false"))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": database})
        fleet.note(f"database refuses connections for {seconds:.0f} s")
        time.sleep(seconds)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        admin.dispose()
        fleet.note("database open again")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between SIGKILLs (±50 %%)")
    parser.add_argument("--block-seconds", type=float, default=60.0)
    parser.add_argument("--stream-seconds", type=float, default=240.0, help="then jobs keep coming for this long")
    parser.add_argument("--stream-every", type=float, default=2.0, help="seconds between two jobs of the stream")
    parser.add_argument("--timeout", type=float, default=3600.0, help="a job not ended by then counts as stuck")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    database = "murmur_soak"
    database_url = args.admin_url.rsplit("/", 1)[0] + "/" + database
    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
    admin.dispose()
    logs = Path(tempfile.mkdtemp(prefix="murmur-soak-"))

    # the expected transcripts, from the embedded runner, before the fleet starts
    from murmur.db.session import sessions, upgrade
    from murmur.tasks.context import Context
    from murmur.tasks.embedded.runner import run as run_embedded
    from murmur.workers.options import JobOptions

    embedded_url = f"sqlite:///{logs / 'embedded.db'}"
    upgrade(embedded_url)
    ctx = Context(db=sessions(embedded_url), device="cpu", compute_type="int8", threads=2)
    expected = {}
    for name, language in FILES:
        options = JobOptions(language=language) if language else JobOptions(multilingual=True)
        expected[name] = [s.text for s in run_embedded(ctx, str(AUDIO / name), options).segments]
    del ctx

    env = {**os.environ, **SETTINGS, "MURMUR_DATABASE_URL": database_url, "MURMUR_DEVICE": "cpu"}
    env.pop("MURMUR_ALLOWED_ROOTS", None)
    fleet = SoakFleet(env, logs)
    os.environ.update({k: env[k] for k in ("MURMUR_BROKER_URL", "MURMUR_DATABASE_URL", *SETTINGS)})
    subprocess.run([str(BIN / "murmur"), "db", "upgrade"], env=env, check=True, capture_output=True)
    from murmur import Client
    from murmur.db.models import ChunkRow, Job, JobState
    from murmur.workers.transcript import Segment

    try:
        for kind in ("cpu", "gpu", "gpu"):
            fleet.start_worker(kind)
        client = Client(broker_url=fleet.redis_url, database_url=database_url)
        plan = [FILES[i % len(FILES)] for i in range(args.jobs)]
        rng.shuffle(plan)
        started = time.monotonic()
        jobs = {}
        for name, language in plan:
            options = {"language": language} if language else {"multilingual": True}
            jobs[client.submit(str(AUDIO / name), **options)] = name
        fleet.note(f"submitted {len(jobs)} jobs")

        progress: dict[str, tuple] = {}
        last_step: dict[str, float] = {j: time.monotonic() for j in jobs}
        longest = {"seconds": 0.0, "job": None}
        streamed: set[str] = set()
        longest_streamed = 0.0
        lengths: list[int] = []  # both queues' messages, sampled during the stream
        broker = redis.Redis.from_url(fleet.redis_url)
        ended: set[str] = set()
        faults = {"redis": False, "database": False, "flush": False}
        resent = (func.coalesce(select(func.sum(ChunkRow.attempts)).where(ChunkRow.job_id == Job.id)
                                .scalar_subquery(), 0) + Job.attempts)  # a job's re-drives, its chunks' included
        flushed_at, before_flush, redriven = None, {}, {}  # the jobs unended at the flush: their re-drives then
        next_kill = time.monotonic() + args.kill_every * rng.uniform(0.5, 1.5)
        blocker, stream_from, next_job = None, None, 0.0
        while (len(ended) < len(jobs) or (stream_from is None and args.stream_seconds)) \
                and time.monotonic() - started < args.timeout:
            now = time.monotonic()
            if stream_from is None and faults["database"] and not blocker.is_alive():
                stream_from = now
                fleet.note(f"jobs keep coming for {args.stream_seconds:.0f} s")
            if stream_from is not None and now - stream_from < args.stream_seconds:
                if now >= next_job:
                    name, language = FILES[rng.randrange(len(FILES))]
                    try:
                        job_id = client.submit(str(AUDIO / name), **({"language": language} if language else
                                                                   {"multilingual": True}))
                        jobs[job_id], last_step[job_id] = name, now
                        streamed.add(job_id)
                    except Exception as exc:  # noqa: BLE001 - the broker is being flushed: the next one goes
                        fleet.note(f"a submission failed ({exc})")
                    next_job = now + args.stream_every
                try:
                    lengths.append(sum(broker.llen(k) for k in broker.keys("murmur.*")))
                except redis.RedisError:
                    pass
                if not faults["flush"] and now - stream_from > args.stream_seconds / 2 and lengths and lengths[-1]:
                    fleet.flush_redis(lengths[-1])
                    faults["flush"], flushed_at = True, now
                    with client.db() as s:
                        before_flush = dict(s.execute(select(Job.id, resent).where(Job.id.in_(list(set(jobs) - ended)))).all())
            try:
                with client.db() as s:
                    rows = s.execute(select(Job.id, Job.status, Job.chunks_done, Job.n_chunks, Job.language,
                                            resent.label("resent"))
                                     .where(Job.id.in_(list(set(jobs) - ended)))).all()
            except Exception:  # noqa: BLE001 - the database is blocked: nothing to see for now
                rows = None
            for row in rows or ():
                state = tuple(row[1:-1])
                if row.id in before_flush and row.id not in redriven and row.resent > before_flush[row.id]:
                    redriven[row.id] = now - flushed_at
                if progress.get(row.id) != state:
                    progress[row.id] = state
                    last_step[row.id] = now
                if row.status in (JobState.done, JobState.failed):
                    ended.add(row.id)
            if rows is not None:
                waiting = [j for j in jobs if j not in ended]
                for j in waiting:
                    if now - last_step[j] > longest["seconds"]:
                        longest = {"seconds": now - last_step[j], "job": j}
                    if j in streamed:
                        longest_streamed = max(longest_streamed, now - last_step[j])
            if now >= next_kill:
                fleet.kill_one(rng)
                next_kill = time.monotonic() + args.kill_every * rng.uniform(0.5, 1.5)
            if not faults["redis"] and len(ended) >= len(jobs) // 4:
                fleet.restart_redis()
                faults["redis"] = True
            if not faults["database"] and len(ended) >= len(jobs) // 2:
                blocker = threading.Thread(target=block_database, args=(args.admin_url, database, args.block_seconds, fleet))
                blocker.start()
                faults["database"] = True
            time.sleep(1)
        if blocker:
            blocker.join()
        elapsed = time.monotonic() - started

        with client.db() as s:
            final = {row.id: row for row in s.execute(select(Job.id, Job.status, Job.error, Job.attempts)
                                                      .where(Job.id.in_(list(jobs)))).all()}
            positions = s.execute(select(Segment.job_id, Segment.chunk_idx, Segment.idx, func.count())
                                  .where(Segment.job_id.in_(list(jobs)))
                                  .group_by(Segment.job_id, Segment.chunk_idx, Segment.idx)
                                  .having(func.count() > 1)).all()
        done = [j for j in jobs if final[j].status == JobState.done]
        failed = {j: final[j].error for j in jobs if final[j].status == JobState.failed}
        stuck = [j for j in jobs if final[j].status not in (JobState.done, JobState.failed)]
        differing = [j for j in done if _differs(" ".join(s.text for s in client.result(j).segments), " ".join(expected[jobs[j]]))]
        rows = [
            ("submitted", len(jobs)),
            ("done", len(done)),
            ("failed with a reason", sum(1 for e in failed.values() if e)),
            ("failed without one", sum(1 for e in failed.values() if not e)),
            ("stuck", len(stuck)),
            ("duplicated segments", len(positions)),
            ("transcripts differing from the embedded run", len(differing)),
            ("longest time a job went without progress (s)", f"{longest['seconds']:.0f}"),
            (f"jobs of the stream ({args.stream_seconds:.0f} s, one every {args.stream_every:g} s)", len(streamed)),
            ("queued messages while the stream ran: fewest, median, most",
             ", ".join(str(n) for n in (min(lengths), sorted(lengths)[len(lengths) // 2], max(lengths))) if lengths else "-"),
            ("longest time a job of the stream went without progress (s)", f"{longest_streamed:.0f}"),
            ("jobs the flush stranded, sent again: how many, after (s) median, longest",
             f"{len(redriven)}, {_median(redriven.values()):.0f}, {max(redriven.values()):.0f}" if redriven else "0"),
            ("re-drives (attempts on job rows)", sum(final[j].attempts for j in jobs)),
            ("wall time (s)", f"{elapsed:.0f}"),
        ]
        report = render(rows, fleet.events, failed, differing, jobs, args)
        print(report)
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        (args.out / f"soak-cpu-{stamp}.md").write_text(report)
        met = not stuck and not positions and not differing and all(failed.values())
        print("targets met" if met else "TARGETS NOT MET", f"(logs in {logs})")
        sys.exit(0 if met else 1)
    finally:
        fleet.stop_all()


def _median(values) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _differs(got: str, expected: str) -> bool:
    """More than 5% of the words changed: a chunk lost or stored twice. Not word for word, as a short
    chunk may share a Whisper window with another job's (MURMUR_PACK_WINDOWS) and move a comma."""
    got, expected = (" ".join(re.findall(r"[\w']+", t.lower())) for t in (got, expected))
    if not expected:
        return bool(got)
    return jiwer.wer(expected, got or "-") > 0.05


def render(rows, events, failed, differing, jobs, args) -> str:
    lines = [f"# Soak, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"`python bench/soak.py --jobs {args.jobs} --kill-every {args.kill_every:g} --block-seconds {args.block_seconds:g} "
             f"--stream-seconds {args.stream_seconds:g} --stream-every {args.stream_every:g} --seed {args.seed}`: "
             f"1 CPU + 2 GPU-queue workers on the CPU, base int8, settings {SETTINGS}.", "",
             "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "Faults:", ""] + [f"- {e}" for e in events]
    if failed:
        lines += ["", "Failures:", ""] + [f"- {jobs[j]}: {e}" for j, e in failed.items()]
    if differing:
        lines += ["", "Differing:", ""] + [f"- {jobs[j]} ({j})" for j in differing]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
