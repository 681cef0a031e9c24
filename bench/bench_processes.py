"""What a user sees: `murmur transcribe` as a whole process beside faster-whisper's whole process.

Each run is a fresh process from the shell: imports, model load, VAD, language
detection and decoding all count, as does the process's peak memory. The
faster-whisper process loads the same CTranslate2 model into
BatchedInferencePipeline. Both get base int8, 2 threads, beam 5, batch 16;
murmur and faster-whisper alternate run by run, and every pair's ratio is
printed, so a target counts as met only if it held in each.

Targets (issue 11): en_5min with detection ≥ 1.3x, the 11 s clip ≥ 1.0x, peak
RSS ≤ faster-whisper's + 10%.

`--long-minutes 30 120` (`make bench-long`) runs files of that length instead,
the shared audio (every synthetic and real clip, 0.5 s apart) concatenated
over and over, language detected: does the peak memory stay flat as the file grows?
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


def write_results(command: str, kind: str, lines: list[str], show: bool = False) -> Path:
    """A bench's text as bench/results/<kind>-cpu-<stamp>.md, under a heading naming the command and machine
    (`show`: printed first)."""
    if show:
        print("\n".join(lines))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = ROOT / "bench" / "results" / f"{kind}-cpu-{stamp}.md"
    path.write_text("\n".join([f"# {command}, {stamp} UTC ({platform.machine()}, {os.cpu_count()} CPUs)", "", *lines, ""]))
    print(f"written: {path.relative_to(ROOT)}")
    return path


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
    parser.add_argument("--long-minutes", type=int, nargs="*", default=[],
                        help="instead of the usual cases, files this many minutes long (concatenated shared audio)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    cases = [(f"{m} min of shared audio, detected", long_file(m), "") for m in args.long_minutes] or CASES
    model = str(resolve_model("base"))  # reassembled once, before any process is timed
    env = {**os.environ, "MURMUR_DATABASE_URL": "sqlite:///" + str(Path(os.environ.get("TMPDIR", "/tmp")) / "murmur-bench.db")}
    runs: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name, *_ in cases}
    for _ in range(args.repeats):
        for name, path, language in cases:
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


def long_file(minutes: int) -> Path:
    """A FLAC of `minutes` of the shared audio, built once into the temp directory."""
    import av
    import numpy as np

    from murmur.workers.cpu.audio import SAMPLE_RATE, decode_audio

    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"murmur-bench-long-{minutes}min.flac"
    if path.is_file():
        return path
    clips = sorted(AUDIO.glob("tts/*.flac")) + sorted(p for p in AUDIO.glob("real/*/*") if p.suffix in (".flac", ".wav", ".mp3", ".opus"))
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    unit = (np.clip(np.concatenate([x for c in clips for x in (decode_audio(c), gap)]), -1, 1) * 32767).astype(np.int16)
    total = minutes * 60 * SAMPLE_RATE
    partial = path.with_suffix(".partial.flac")
    with av.open(str(partial), "w") as out:
        stream = out.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        written = 0
        while written < total:
            offset = written % unit.size
            piece = unit[offset : offset + min(SAMPLE_RATE * 60, total - written, unit.size - offset)]
            frame = av.AudioFrame.from_ndarray(piece[None, :], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                out.mux(packet)
            written += piece.size
        for packet in stream.encode(None):
            out.mux(packet)
    partial.rename(path)
    return path


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
