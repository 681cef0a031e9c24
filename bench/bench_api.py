"""The HTTP API beside faster-whisper: twenty short clips as concurrent OpenAI-client requests.

murmur: `murmur serve` in front of one CPU worker and two GPU-queue workers
(one thread each), twenty `client.audio.transcriptions.create` calls of the
official `openai` package sent at once, each from its own client process
(bench/api_client.py), as twenty apps would send them. faster-whisper:
the same clips one after another through BatchedInferencePipeline in this
process (two threads), the model loaded and warmed first, as the fleet is.
Both get each clip's language, base int8, beam 5, batch 8.

The API's own overhead per request is the client's request-to-response time
minus the job's life in the fleet (created to finished: every stage and every
queue): what the server adds by receiving the upload, creating the job,
noticing its end and rendering the answer. A lone 3-second request's
request-to-response time minus its stage times is printed too: that is the
whole path's overhead (HTTP, broker hops, polling), not the API's alone.
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
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import redis

from bench_distributed import AUDIO, BIN, REAL_SHORT, ROOT, THREE_SECONDS, Fleet, synthetic_pieces
from murmur.workers.cpu.audio import SAMPLE_RATE, decode_audio
from murmur.workers.gpu.model import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the twenty requests; the best counts")
    parser.add_argument("--lone-runs", type=int, default=10)
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/murmur_bench_api")
    parser.add_argument("--worker-nice", type=int, default=0,
                        help="run the workers at this nice value (diagnosis: the server's share of a saturated CPU)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="murmur-bench-api-"))
    env = server_env(args.broker_url, args.database_url, tmp)

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from murmur.db import queries
    from murmur.db.session import sessions

    db = sessions(args.database_url)
    clips = [(AUDIO / "real" / f, lang) for f, lang in REAL_SHORT] + synthetic_pieces(tmp, 13)
    clips = clips[:20]
    seconds = sum(decode_audio(str(p)).size for p, _ in clips) / SAMPLE_RATE

    fw = WhisperModel(str(resolve_model("base")), device="cpu", compute_type="int8", cpu_threads=2)
    batched = BatchedInferencePipeline(fw)

    def fw_run(files) -> float:
        start = time.perf_counter()
        for path, language in files:
            list(batched.transcribe(str(path), language=language, batch_size=8, beam_size=5)[0])
        return time.perf_counter() - start

    fleet = Fleet(env, tmp)
    port = _free_port()
    serve_log = (tmp / "serve.log").open("w")
    server = subprocess.Popen([str(BIN / "murmur"), "serve", "--port", str(port), "--loglevel", "warning"], env=env,
                              stdout=serve_log, stderr=subprocess.STDOUT)

    clients = [subprocess.Popen([sys.executable, str(ROOT / "bench" / "api_client.py"), f"http://127.0.0.1:{port}/v1"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(len(clips))]

    def measured(sent: float, latency: float, job_id: str) -> tuple[float, float, float, float, float]:
        """(request-to-response, the job's life in the fleet, its stage times, request to the job's
        creation, the job's end to the response), in seconds."""
        job = queries.get_job(db, job_id)
        return (latency, (job.finished_at - job.created_at).total_seconds(),
                job.prepare_seconds + job.detect_seconds + job.decode_seconds,
                job.created_at.timestamp() - sent, sent + latency - job.finished_at.timestamp())

    def api_run(files) -> tuple[float, list]:
        """Each clip from its own client process, all sent at once."""
        start = time.perf_counter()
        for proc, (path, language) in zip(clients, files):
            proc.stdin.write(f"{path}\t{language}\n")
            proc.stdin.flush()
        answers = [json.loads(proc.stdout.readline()) for proc in clients[:len(files)]]
        wall = time.perf_counter() - start
        timings.extend(_server_timing(a["timing"]) for a in answers)
        return wall, [measured(a["sent"], a["latency"], a["job"]) for a in answers]

    timings: list[dict[str, float]] = []

    def request(clip) -> tuple[float, float, float, float, float]:
        return api_run([clip])[1][0]

    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", server)
        fleet.start("cpu", "cpu", "--threads", "1")
        fleet.start("gpu1", "gpu", "--threads", "1")
        fleet.start("gpu2", "gpu", "--threads", "1")
        if args.worker_nice:
            for proc in fleet.procs.values():
                for tid in os.listdir(f"/proc/{proc.pid}/task"):
                    os.setpriority(os.PRIO_PROCESS, int(tid), args.worker_nice)
        api_run(clips)  # warm every worker, the server and each client
        fw_run(clips[:2])
        server_cpu, client_cpu = _cpu_seconds(server.pid), sum(_cpu_seconds(c.pid) for c in clients)
        timings.clear()
        runs = [api_run(clips) for _ in range(args.repeats)]
        burst_timings = list(timings)
        server_cpu, client_cpu = _cpu_seconds(server.pid) - server_cpu, sum(_cpu_seconds(c.pid) for c in clients) - client_cpu
        fw_walls = [fw_run(clips) for _ in range(args.repeats)]
        lone = [request((THREE_SECONDS, "en")) for _ in range(args.lone_runs)]
    finally:
        for proc in clients:
            proc.stdin.close()
            proc.wait(30)
        fleet.stop_all()
        server.terminate()
        server.wait(30)

    api_overheads = [latency - life for _, results in runs for latency, life, *_ in results]
    before = [r[3] for _, results in runs for r in results]
    after = [r[4] for _, results in runs for r in results]
    lone_overheads = [latency - stages for latency, _, stages, *_ in lone]
    best_api, best_fw = min(wall for wall, _ in runs), min(fw_walls)
    lines = [
        f"# murmur serve vs faster-whisper — {platform.node() or socket.gethostname()}, {os.cpu_count()} cores",
        "",
        f"Twenty short clips ({seconds:.0f} s of audio); base int8 on CPU, beam 5, batch 8, language given; "
        f"best of {args.repeats} runs; x RT = audio seconds / wall seconds.",
        "",
        "| system | wall (s), every run | x RT (best) |",
        "|---|---|---:|",
        f"| murmur serve, 20 concurrent openai-client requests, 1 CPU + 2 GPU-queue workers x 1 thread | "
        f"{', '.join(f'{wall:.1f}' for wall, _ in runs)} | {seconds / best_api:.1f} |",
        f"| faster-whisper BatchedInferencePipeline, the clips one after another, 1 process x 2 threads | "
        f"{', '.join(f'{w:.1f}' for w in fw_walls)} | {seconds / best_fw:.1f} |",
        "",
        f"Throughput ratio (best against best): **{best_fw / best_api:.2f}x** (target ≥ 1.2x); "
        f"worst murmur run against best faster-whisper run: {best_fw / max(w for w, _ in runs):.2f}x; "
        f"run by run: {', '.join(f'{f / w:.2f}x' for (w, _), f in zip(runs, fw_walls))}.",
        "",
        f"API overhead per request (request-to-response minus the job's created-to-finished), "
        f"{len(api_overheads)} requests: median **{statistics.median(api_overheads) * 1000:.0f} ms** (target ≤ 100 ms), "
        f"max {max(api_overheads) * 1000:.0f} ms; of which request to the job's creation (upload, key, admission) "
        f"median {statistics.median(before) * 1000:.0f} ms, the job's end to the answer {statistics.median(after) * 1000:.0f} ms; "
        "median run by run: " + ", ".join(f"{statistics.median(r[0] - r[1] for r in results) * 1000:.0f} ms" for _, results in runs) + ".",
        "",
        "The server's own account of those requests (Server-Timing, medians): "
        + ", ".join(f"{name} {statistics.median(t[name] for t in burst_timings):.0f} ms" for name in ("upload", "admit", "answer"))
        + "; the time from the client's send to the server's first look at the request is the rest of the first part.",
        "",
        f"CPU time over the {args.repeats} runs of twenty requests: the server {server_cpu:.1f} s, "
        f"the twenty openai-client processes {client_cpu:.1f} s (diagnosis: what the workers did not get of the two cores).",
        "",
        f"A lone 3-second request ({THREE_SECONDS.name}), {len(lone)} runs: request-to-response minus stage times, "
        f"median {statistics.median(lone_overheads) * 1000:.0f} ms (the whole path: HTTP, broker hops, polling); "
        f"request-to-response median {statistics.median(r[0] for r in lone) * 1000:.0f} ms.",
        "",
    ]
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"api-cpu-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.md"
    path.write_text(table)
    print(f"written to {path.relative_to(ROOT)}")


def _server_timing(header: str) -> dict[str, float]:
    parts = (part.strip().split(";dur=") for part in header.split(",") if ";dur=" in part)
    return {name: float(duration) for name, duration in parts}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_env(broker_url: str, database_url: str, tmp: Path) -> dict:
    """The environment of a bench's `murmur serve` and workers (base int8 on CPU, batch 8), its database
    upgraded and its broker's database emptied."""
    env = {**os.environ, "MURMUR_BROKER_URL": broker_url, "MURMUR_DATABASE_URL": database_url, "MURMUR_MODEL": "base",
           "MURMUR_DEVICE": "cpu", "MURMUR_COMPUTE_TYPE": "int8", "MURMUR_BATCH_SIZE": "8",
           "MURMUR_UPLOAD_DIR": str(tmp / "uploads")}
    env.pop("MURMUR_ALLOWED_ROOTS", None)
    subprocess.run([str(BIN / "murmur"), "db", "upgrade"], env=env, check=True, capture_output=True)
    redis.Redis.from_url(broker_url).flushdb()
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("murmur serve did not start") from None
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
