"""What a user sees: `murmur transcribe` as a whole process beside faster-whisper's whole process.

Each run is a fresh process from the shell: imports, model load, VAD, language
detection and decoding all count, as does the process's peak memory. The
faster-whisper process loads the same CTranslate2 model into
BatchedInferencePipeline. Both get base int8, 2 threads, beam 5, batch 16;
murmur and faster-whisper alternate run by run, and every pair's ratio is
printed, so a target counts as met only if it held in each.

Targets (issue 11): en_5min with detection ≥ 1.3x, the 11 s clip ≥ 1.0x, peak
RSS ≤ faster-whisper's + 10%.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from murmur.workers.gpu.model import resolve_model

ROOT = Path(__file__).resolve().parents[1]
AUDIO = Path(os.environ.get("MURMUR_BENCH_AUDIO", ROOT.parent / "shared" / "audio"))
BIN = Path(sys.executable).parent
FASTER_WHISPER = """
import sys
from faster_whisper import BatchedInferencePipeline, WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8", cpu_threads=int(sys.argv[4]))
segments, info = BatchedInferencePipeline(model).transcribe(
    sys.argv[2], language=sys.argv[3] or None, beam_size=5, batch_size=int(sys.argv[5]))
print("".join(s.text for s in segments))
"""
CASES = [  # (name, file, language given or "")
    ("en_5min, language detected", AUDIO / "tts" / "en_5min.flac", ""),
    ("en_5min, --language en", AUDIO / "tts" / "en_5min.flac", "en"),
    ("11 s clip (JFK), detected", AUDIO / "real" / "en" / "jfk_inaugural_1961.flac", ""),
]
TARGETS = {CASES[0][0]: 1.3, CASES[2][0]: 1.0}


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{command[0]} failed: {proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    model = str(resolve_model("base"))  # reassembled once, before any process is timed
    env = {**os.environ, "MURMUR_DATABASE_URL": "sqlite:///" + str(Path(os.environ.get("TMPDIR", "/tmp")) / "murmur-bench.db")}
    runs: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name, *_ in CASES}
    for _ in range(args.repeats):
        for name, path, language in CASES:
            ours = [str(BIN / "murmur"), "transcribe", str(path), "--threads", str(args.threads),
                    "--batch-size", str(args.batch_size), "--beam-size", "5", "--compute-type", "int8", "--device", "cpu"]
            ours += ["--language", language] if language else []
            theirs = [sys.executable, "-c", FASTER_WHISPER, model, str(path), language, str(args.threads), str(args.batch_size)]
            m_wall, m_rss = timed(ours, env)
            f_wall, f_rss = timed(theirs, env)
            runs[name].append((m_wall, f_wall, m_rss, f_rss))
            print(f"  {name}: murmur {m_wall:.1f} s {m_rss:.0f} MB, faster-whisper {f_wall:.1f} s {f_rss:.0f} MB",
                  file=sys.stderr, flush=True)
    table = render(runs, args)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"processes-cpu-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.md"
    path.write_text(table + "\n")
    print(f"written to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", file=sys.stderr)


def render(runs: dict, args) -> str:
    lines = [
        f"# Whole processes from the shell: murmur transcribe vs faster-whisper — {platform.node()}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d}",
        "",
        f"base int8 on CPU, {args.threads} threads, beam 5, batch {args.batch_size}; {args.repeats} alternating runs; "
        "ratio = faster-whisper s / murmur s, run by run.",
        "",
        "| run | murmur s | faster-whisper s | ratio, run by run | target | peak RSS murmur / fw MB |",
        "|---|---|---|---|---:|---:|",
    ]
    for name, pairs in runs.items():
        ratios = ", ".join(f"{f / m:.2f}x" for m, f, _, _ in pairs)
        target = f"≥ {TARGETS[name]}x" if name in TARGETS else ""
        rss = f"{max(p[2] for p in pairs):.0f} / {max(p[3] for p in pairs):.0f}"
        lines.append(f"| {name} | {', '.join(f'{p[0]:.1f}' for p in pairs)} | {', '.join(f'{p[1]:.1f}' for p in pairs)} | "
                     f"{ratios} (median {statistics.median(f / m for m, f, _, _ in pairs):.2f}x) | {target} | {rss} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
