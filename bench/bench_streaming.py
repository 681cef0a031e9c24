"""Results as they come: when a whole process prints its first line, against when it ends.

`murmur transcribe` of a 10-minute file (en_5min twice, 1 s apart), text
printed as it is released, beside faster-whisper's BatchedInferencePipeline on
the same model printing each segment as its generator yields it (batch 16, its
default), both base int8 on every core, the language detected. Each run
alternates the two. Reported: seconds to the first line on stdout, seconds to
the end, and the first line's share of the run.

Targets (issue 29): the first line within 30% of the run; the run no slower
than faster-whisper batched's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_processes import AUDIO, BIN, write_results  # noqa: E402

from murmur.workers.gpu.model import resolve_model  # noqa: E402

FASTER_WHISPER_LINES = """
import sys
from faster_whisper import BatchedInferencePipeline, WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8", cpu_threads=int(sys.argv[3]))
segments, info = BatchedInferencePipeline(model).transcribe(sys.argv[2], beam_size=5, batch_size=16)
for s in segments:
    print(s.text.strip(), flush=True)
"""


def ten_minutes(folder: Path) -> Path:
    speech, rate = sf.read(AUDIO / "tts" / "en_5min.flac", dtype="float32")
    path = folder / "en_10min.flac"
    sf.write(path, np.concatenate([speech, np.zeros(rate, np.float32), speech]), rate)
    return path


def first_and_last(command: list[str], env: dict) -> tuple[float, float, int]:
    """Seconds to the first non-empty line on stdout, seconds to the end, and how many lines."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, lines = None, 0
    for line in proc.stdout:
        if line.strip():
            first = first or time.perf_counter() - started
            lines += 1
    err = proc.stderr.read()
    if proc.wait():
        raise SystemExit(f"{command[0]} failed: {err[-2000:]}")
    return first or float("nan"), time.perf_counter() - started, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another checkout's murmur script, run alongside (e.g. landed main's)")
    args = parser.parse_args()
    model = str(resolve_model("base"))
    env = {**os.environ, "MURMUR_DATABASE_URL": "sqlite:///" + str(Path(tempfile.gettempdir()) / "murmur-bench.db")}
    with tempfile.TemporaryDirectory() as folder:
        path = ten_minutes(Path(folder))
        kinds = {"murmur transcribe": [str(BIN / "murmur"), "transcribe", str(path)],
                 "faster-whisper batched": [sys.executable, "-c", FASTER_WHISPER_LINES, model, str(path), str(os.cpu_count() or 2)]}
        if args.before:
            kinds["murmur transcribe, before"] = [str(args.before), "transcribe", str(path)]
        runs = {kind: [] for kind in kinds}
        for _ in range(args.repeats):
            for kind, command in kinds.items():
                runs[kind].append(first_and_last(command, env))
                first, total, lines = runs[kind][-1]
                print(f"{kind}: first line {first:.1f} s, end {total:.1f} s ({first / total:.0%}), {lines} lines", flush=True)
    rows = []
    for kind, results in runs.items():
        shares = [f / t for f, t, _ in results]
        versus = [fw_t / t for (_, t, _), (_, fw_t, _) in zip(results, runs["faster-whisper batched"])]
        rows.append(f"| {kind} | {statistics.median(f for f, _, _ in results):.1f} s | {statistics.median(t for _, t, _ in results):.1f} s "
                    f"({', '.join(f'{t:.1f}' for _, t, _ in results)}) | {', '.join(f'{s:.0%}' for s in shares)} "
                    f"| {', '.join(f'{v:.2f}x' for v in versus)} |")
    print("\n".join(rows))
    write_results("make bench-streaming", "streaming", [
        "Whole processes on a 10-minute file (en_5min twice), base int8, every core, language detected; runs alternate.",
        "First line: seconds until the process printed its first line of text. Share: first line over the whole run, run by run.",
        "Ratio: faster-whisper batched's whole run over this command's, run by run (≥ 1: faster).",
        "",
        "| command | first line, median | whole run, median (runs) | first line's share | vs faster-whisper batched |",
        "|---|---:|---|---|---|",
        *rows,
    ])

if __name__ == "__main__":
    main()
