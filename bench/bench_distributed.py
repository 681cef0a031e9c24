"""murmur's worker fleet beside faster-whisper on this machine: five numbers.

1. One long job (tts/en_5min): one CPU worker and two GPU-queue workers with
   one thread each, against BatchedInferencePipeline in one process with two threads;
   once with its language given, once detected by both (no target: for diagnosis).
2. Forty short jobs (5–20 s; real clips and pieces cut from the synthetic set)
   submitted at once, against the same clips one after another through
   BatchedInferencePipeline.
3. Overhead: submit-to-done time of a 3-second clip minus the stage times the
   job row records (prepare + detect + decode), median of several runs.
4. Scaling: the forty jobs with two GPU-queue workers against one.

The workers are real `murmur worker` processes against the machine's Redis and
Postgres (a `murmur_bench` database); faster-whisper runs in this process while
the workers sit idle. Every system gets the clip's language (but in the row that
says detected), base int8, beam 5, batch 8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import redis

from murmur.workers.cpu.audio import SAMPLE_RATE, decode_audio
from murmur.workers.gpu.model import resolve_model

ROOT = Path(__file__).resolve().parents[1]

AUDIO = Path(os.environ.get("MURMUR_BENCH_AUDIO", ROOT.parent / "shared" / "audio"))
BIN = Path(sys.executable).parent
REAL_SHORT = [  # (file under real/, language): the real clips of 5–20 s
    ("en/stereo_two_speakers.wav", "en"),
    ("en/librivox_sense_sensibility_0870.wav", "en"),
    ("en/librivox_sense_sensibility_0890.wav", "en"),
    ("en/librivox_sense_sensibility_0920.wav", "en"),
    ("en/mfa_words.flac", "en"),
    ("en/jfk_inaugural_1961.flac", "en"),
    ("es/mls_spanish_13697_11991_000000.opus", "es"),
]
THREE_SECONDS = AUDIO / "real" / "en" / "librivox_sense_sensibility_0880.wav"


def synthetic_pieces(out: Path, count: int) -> list[tuple[Path, str]]:
    """Runs of whole sentences of 5–20 s cut from the synthetic files, as wav."""
    pieces = []
    for name in ("en_5min", "de_1min", "es_1min", "fr_1min"):
        meta = json.loads((AUDIO / "tts" / f"{name}.json").read_text())
        audio = decode_audio(str(AUDIO / "tts" / f"{name}.flac"))
        sentences, start = meta["segments"], 0
        while start < len(sentences) and len(pieces) < count:
            end = start
            while end < len(sentences) and sentences[end]["end"] - sentences[start]["start"] < 8.0:
                end += 1
            a, b = sentences[start]["start"] - 0.2, sentences[min(end, len(sentences) - 1)]["end"] + 0.2
            if 5.0 <= b - a <= 20.0:
                path = out / f"{name}_{len(pieces):02d}.wav"
                _write_wav(path, audio[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)])
                pieces.append((path, sentences[start]["lang"]))
            start = end + 1
        if len(pieces) >= count:
            break
    return pieces


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())


class Fleet:
    def __init__(self, env: dict, logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, {}

    def start(self, name: str, kind: str, *args: str) -> None:
        log = (self.logs / f"{name}.log").open("w")
        proc = subprocess.Popen([str(BIN / "murmur"), "worker", kind, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        deadline = time.monotonic() + 120
        while " ready." not in (self.logs / f"{name}.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker {name} did not start:\n{(self.logs / f'{name}.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.terminate()
        proc.wait(30)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the long job and of the forty jobs; the best counts")
    parser.add_argument("--overhead-runs", type=int, default=10)
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/murmur_bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    env = {**os.environ, "MURMUR_BROKER_URL": args.broker_url, "MURMUR_DATABASE_URL": args.database_url,
           "MURMUR_MODEL": args.model, "MURMUR_DEVICE": "cpu", "MURMUR_COMPUTE_TYPE": "int8", "MURMUR_BATCH_SIZE": "8"}
    env.pop("MURMUR_ALLOWED_ROOTS", None)
    os.environ.update({k: env[k] for k in ("MURMUR_BROKER_URL", "MURMUR_DATABASE_URL", "MURMUR_MODEL")})
    subprocess.run([str(BIN / "murmur"), "db", "upgrade"], env=env, check=True, capture_output=True)
    redis.Redis.from_url(args.broker_url).flushdb()

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from murmur import Client

    tmp = Path(tempfile.mkdtemp(prefix="murmur-bench-"))
    short = [(AUDIO / "real" / f, lang) for f, lang in REAL_SHORT] * 3
    short = short[:20] + synthetic_pieces(tmp, 20)
    short_seconds = sum(decode_audio(str(p)).size for p, _ in short) / SAMPLE_RATE
    long_file = AUDIO / "tts" / "en_5min.flac"
    long_seconds = decode_audio(str(long_file)).size / SAMPLE_RATE

    fw = WhisperModel(str(resolve_model(args.model)), device="cpu", compute_type="int8", cpu_threads=2)
    batched = BatchedInferencePipeline(fw)

    def fw_run(files):
        start = time.perf_counter()
        for path, language in files:
            list(batched.transcribe(str(path), language=language, batch_size=8, beam_size=5)[0])
        return time.perf_counter() - start

    client = Client()
    fleet = Fleet(env, tmp)

    def murmur_run(files):
        start = time.perf_counter()
        jobs = [client.submit(str(path), language=language) for path, language in files]
        for job in jobs:
            # a coarse poll: on two cores a busy poller takes CPU from the workers it times
            client.wait(job, timeout=1800, poll_seconds=0.05)
        return time.perf_counter() - start

    rows = []
    try:
        fleet.start("cpu", "cpu", "--threads", "1")
        fleet.start("gpu1", "gpu", "--threads", "1")
        fleet.start("gpu2", "gpu", "--threads", "1")
        murmur_run(short[:4])  # warm every worker
        fw_run(short[:2])

        long_murmur = min(murmur_run([(long_file, "en")]) for _ in range(args.repeats))
        long_fw = min(fw_run([(long_file, "en")]) for _ in range(args.repeats))
        rows.append(("one long job (en_5min, %.0f s)" % long_seconds, "1 CPU + 2 GPU-queue workers x 1 thread",
                     long_seconds / long_murmur, "fw BatchedInferencePipeline, 1 process x 2 threads", long_seconds / long_fw, 1.1))
        detected_murmur = min(murmur_run([(long_file, None)]) for _ in range(args.repeats))
        detected_fw = min(fw_run([(long_file, None)]) for _ in range(args.repeats))
        rows.append(("the long job, language detected", "1 CPU + 2 GPU-queue workers x 1 thread",
                     long_seconds / detected_murmur, "fw BatchedInferencePipeline, 1 process x 2 threads",
                     long_seconds / detected_fw, None))

        paired = [(murmur_run(short), fw_run(short)) for _ in range(args.repeats)]  # side by side, run by run
        forty_two, forty_fw = min(m for m, _ in paired), min(f for _, f in paired)
        rows.append(("forty short jobs (%d s in all)" % short_seconds, "1 CPU + 2 GPU-queue workers x 1 thread",
                     short_seconds / forty_two, "the same clips one after another through fw Batched", short_seconds / forty_fw, 2.0))

        overheads, computes = [], []
        for _ in range(args.overhead_runs):
            start = time.perf_counter()
            job = client.submit(str(THREE_SECONDS), language="en")
            status = client.wait(job, timeout=120, poll_seconds=0.002)
            wall = time.perf_counter() - start
            overheads.append(wall - status.compute_seconds)
            computes.append(status.compute_seconds)

        fleet.stop("gpu2")
        forty_one = min(murmur_run(short) for _ in range(args.repeats))
        rows.append(("scaling: the forty jobs", "2 GPU-queue workers x 1 thread", short_seconds / forty_two,
                     "1 GPU-queue worker x 1 thread", short_seconds / forty_one, 1.6))
    finally:
        fleet.stop_all()

    overhead_ms = statistics.median(overheads) * 1000
    table = render(rows, overhead_ms, statistics.median(computes) * 1000, overheads, args, paired)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"distributed-cpu-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.md"
    path.write_text(table)
    print(f"written to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def render(rows, overhead_ms: float, compute_ms: float, overheads: list[float], args, paired) -> str:
    packing = os.environ.get("MURMUR_PACK_WINDOWS", "true (default)")
    lines = [
        f"# murmur distributed vs faster-whisper — {platform.node() or socket.gethostname()}, {os.cpu_count()} cores",
        "",
        f"model {args.model}, int8 on CPU, beam 5, batch 8, language given but where detected; best of {args.repeats} runs; x RT = audio seconds / wall seconds;"
        f" MURMUR_PACK_WINDOWS={packing}.",
        "",
        "| workload | murmur | x RT | against | x RT | ratio | target |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for workload, ours, ours_speed, theirs, their_speed, target in rows:
        ratio = ours_speed / their_speed
        goal = f"≥ {target}x" if target else "—"
        lines.append(f"| {workload} | {ours} | {ours_speed:.1f} | {theirs} | {their_speed:.1f} | {ratio:.2f}x | {goal} |")
    spread = ", ".join(f"{o * 1000:.0f}" for o in sorted(overheads))
    lines += [
        "",
        "Forty short jobs, run by run (murmur s / fw s = ratio): "
        + "; ".join(f"{m:.1f} / {f:.1f} = {f / m:.2f}x" for m, f in paired) + ".",
        "",
        f"Overhead of a 3-second clip ({THREE_SECONDS.name}): submit-to-done minus the job's stage times, "
        f"median {overhead_ms:.0f} ms (target ≤ 150 ms); its stages took {compute_ms:.0f} ms; all runs (ms): {spread}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
