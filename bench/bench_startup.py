"""How long a producer's command takes from the shell, beside `celery --help` on the same machine.

Whole processes as a user runs them (interpreter start and imports included),
median of `--repeats` runs each: `murmur --help`, `murmur status JOB` (a SQLite
job database), `murmur submit FILE` (that database and a Redis database that is
flushed afterwards; no worker takes the job), and `celery --help`.
Target: `murmur status` no slower than 1.5x `celery --help`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLIP = ROOT / "tests" / "data" / "jfk_inaugural_1961.flac"


def median_seconds(command: list[str], env: dict, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    database = f"sqlite:///{tempfile.mkdtemp(prefix='murmur-startup-')}/jobs.db"
    env = {**os.environ, "MURMUR_DATABASE_URL": database, "MURMUR_BROKER_URL": args.broker_url}
    murmur = str(BIN / "murmur")
    subprocess.run([murmur, "db", "upgrade"], env=env, check=True, capture_output=True)
    job_id = subprocess.run([murmur, "submit", str(CLIP)], env=env, check=True, capture_output=True, text=True).stdout.strip()
    commands = {
        "celery --help": [str(BIN / "celery"), "--help"],
        "murmur --help": [murmur, "--help"],
        "murmur status JOB": [murmur, "status", job_id],
        "murmur submit FILE": [murmur, "submit", str(CLIP)],
    }
    try:
        seconds = {name: median_seconds(command, env, args.repeats) for name, command in commands.items()}
    finally:
        redis.Redis.from_url(args.broker_url).flushdb()
    base = seconds["celery --help"]
    lines = [
        f"# murmur producer commands beside `celery --help` — {platform.node()}, {os.cpu_count()} cores, "
        f"median of {args.repeats} runs, {datetime.now(timezone.utc):%Y-%m-%d}",
        "",
        "| command | seconds | ÷ celery --help |",
        "|---|---:|---:|",
        *(f"| `{name}` | {s:.3f} | {s / base:.2f}x |" for name, s in seconds.items()),
        "",
        f"Target: `murmur status` ≤ 1.5x `celery --help`: {seconds['murmur status JOB'] / base:.2f}x.",
        "",
    ]
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"startup-cpu-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.md"
    path.write_text(table)
    print(f"written to {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
