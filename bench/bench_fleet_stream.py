"""Results as they come through the fleet: OpenAI's `stream=true` on a 5-minute job.

`murmur serve` in front of one CPU worker and two GPU-queue workers (one
thread each, as `make bench-api` runs them); the official `openai` client sends
en_5min with `stream=True`, language detected, and times its first
`transcript.text.delta` and its `transcript.text.done` from the request's start.
One warm-up request first, then `--repeats` measured ones.

Target (issue 29): the first delta within 50% of the request's time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import _free_port, _wait_for, server_env  # noqa: E402
from bench_distributed import AUDIO, BIN, Fleet  # noqa: E402
from bench_processes import write_results  # noqa: E402


def streamed(client, path: Path) -> tuple[float, float, int]:
    """Seconds to the first delta and to the done event, and how many deltas came."""
    started, first, deltas = time.perf_counter(), None, 0
    with path.open("rb") as f:
        for event in client.audio.transcriptions.create(model="whisper-1", file=f, stream=True):
            if event.type == "transcript.text.delta":
                first = first or time.perf_counter() - started
                deltas += 1
    return first or float("nan"), time.perf_counter() - started, deltas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/murmur_bench_api")
    args = parser.parse_args()
    import openai

    tmp = Path(tempfile.mkdtemp(prefix="murmur-bench-stream-"))
    env = server_env(args.broker_url, args.database_url, tmp)
    fleet, port = Fleet(env, tmp), _free_port()
    server = subprocess.Popen([str(BIN / "murmur"), "serve", "--port", str(port), "--loglevel", "warning"], env=env,
                              stdout=(tmp / "serve.log").open("w"), stderr=subprocess.STDOUT)
    path = AUDIO / "tts" / "en_5min.flac"
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", server)
        fleet.start("cpu", "cpu", "--threads", "1")
        fleet.start("gpu1", "gpu", "--threads", "1")
        fleet.start("gpu2", "gpu", "--threads", "1")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused: no key on loopback",
                               max_retries=0, timeout=600)
        streamed(client, AUDIO / "real" / "en" / "jfk_inaugural_1961.flac")  # warm every worker and the server
        runs = []
        for _ in range(args.repeats):
            runs.append(streamed(client, path))
            print(f"first delta {runs[-1][0]:.1f} s, done {runs[-1][1]:.1f} s ({runs[-1][0] / runs[-1][1]:.0%}), "
                  f"{runs[-1][2]} deltas", flush=True)
    finally:
        fleet.stop_all()
        server.terminate()
        server.wait(30)
    write_results("make bench-fleet-stream", "fleet-stream", [
        "`murmur serve` over one CPU and two one-thread GPU-queue workers; the openai client, stream=True, en_5min,",
        "language detected; seconds from the request's start.",
        "",
        "| first delta, median | done, median (runs) | first delta's share, run by run | deltas |",
        "|---:|---|---|---:|",
        f"| {statistics.median(r[0] for r in runs):.1f} s | {statistics.median(r[1] for r in runs):.1f} s "
        f"({', '.join(f'{r[1]:.1f}' for r in runs)}) | {', '.join(f'{r[0] / r[1]:.0%}' for r in runs)} | {runs[0][2]} |",
    ])


if __name__ == "__main__":
    main()
