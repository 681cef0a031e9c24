"""Many files, one command: 24 short real clips in one `murmur transcribe` process.

The clips: every real recording of 2.5–30 s in the shared audio (English and
Spanish), the first 30 s of five AMI meetings, and 20 s pieces of the real
French and German recordings, 24 in all. Beside it, faster-whisper's
BatchedInferencePipeline transcribing them one after another in one process,
the model loaded once (beam 5, batch 16, language detected for each), and
murmur run once per file as a shell loop would. Whole processes, base int8,
every core; each repeat alternates the three. WER (Whisper's English
normalizer, jiwer) over the clips whose whole reference is known, pooled, so
that a file that took another's words would show.

Target (issue 29): murmur's one command ≥ 2x faster than faster-whisper's loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jiwer
import soundfile as sf
from whisper_normalizer.english import EnglishTextNormalizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_processes import AUDIO, BIN, write_results  # noqa: E402

from murmur.workers.cpu.audio import SAMPLE_RATE, decode_audio  # noqa: E402
from murmur.workers.gpu.model import resolve_model  # noqa: E402

FASTER_WHISPER_LOOP = """
import json, sys
from pathlib import Path
from faster_whisper import BatchedInferencePipeline, WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8", cpu_threads=int(sys.argv[3]))
pipeline = BatchedInferencePipeline(model)
texts = {}
for path in sorted(Path(sys.argv[2]).iterdir()):
    segments, info = pipeline.transcribe(str(path), beam_size=5, batch_size=16)
    texts[path.stem] = " ".join(s.text.strip() for s in segments)
print(json.dumps(texts))
"""
normalize = EnglishTextNormalizer()


def clips(folder: Path) -> dict[str, str | None]:
    """The 24 clips written to `folder` as FLAC; {stem: its reference, or None where only a piece was cut}."""
    chosen: dict[str, str | None] = {}
    for entry in json.loads((AUDIO / "real" / "manifest.json").read_text()):
        path = AUDIO / "real" / entry["file"]
        if 2.5 <= entry["dur"] <= 30 and "stereo" not in path.name:  # the stereo clip's reference is per channel
            sf.write(folder / f"{path.stem}.flac", decode_audio(str(path)), SAMPLE_RATE)
            chosen[path.stem] = entry["text"] if entry["lang"] == "en" else None
    for meeting in sorted((AUDIO / "diar").glob("ami_*.flac"))[:5]:
        sf.write(folder / meeting.name, decode_audio(str(meeting)), SAMPLE_RATE)
        chosen[meeting.stem] = None
    pieces = [AUDIO / "real" / "fr" / "asterisk_fr_demo_prompts_concat.wav",
              AUDIO / "real" / "de" / "librivox_grimmelshausen_simplicissimus_title.mp3"]
    for long in pieces:
        audio = decode_audio(str(long))
        for k in range(3):
            if len(chosen) < 24:
                name = f"{long.stem}_{k}"
                sf.write(folder / f"{name}.flac", audio[k * 20 * SAMPLE_RATE:(k + 1) * 20 * SAMPLE_RATE], SAMPLE_RATE)
                chosen[name] = None
    return chosen


def run(command: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{command[:3]} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout


def pooled_wer(references: dict[str, str | None], texts: dict[str, str]) -> float:
    known = [stem for stem, ref in references.items() if ref]
    return 100 * jiwer.wer([normalize(references[s]) for s in known], [normalize(texts.get(s, "")) or "-" for s in known])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = str(resolve_model("base"))
    with tempfile.TemporaryDirectory() as scratch:
        folder, out = Path(scratch) / "clips", Path(scratch) / "out"
        folder.mkdir()
        references = clips(folder)
        paths = sorted(folder.iterdir())
        env = {**os.environ, "MURMUR_DATABASE_URL": f"sqlite:///{scratch}/murmur-bench.db"}
        seconds = sum(sf.info(p).duration for p in paths)
        print(f"{len(paths)} clips, {seconds:.0f} s of audio", flush=True)
        walls: dict[str, list[float]] = {"murmur transcribe, one command": [], "faster-whisper batched, one process": [],
                                         "murmur transcribe, one process per file": []}
        wers: dict[str, float] = {}
        for _ in range(args.repeats):
            wall, _ = run([str(BIN / "murmur"), "transcribe", str(folder), "--output-dir", str(out), "--format", "txt"], env)
            walls["murmur transcribe, one command"].append(wall)
            wers["murmur transcribe, one command"] = pooled_wer(references, {p.stem: p.read_text() for p in out.iterdir()})
            wall, printed = run([sys.executable, "-c", FASTER_WHISPER_LOOP, model, str(folder), str(os.cpu_count() or 2)], env)
            walls["faster-whisper batched, one process"].append(wall)
            wers["faster-whisper batched, one process"] = pooled_wer(references, json.loads(printed))
            started, texts = time.perf_counter(), {}
            for path in paths:
                texts[path.stem] = run([str(BIN / "murmur"), "transcribe", str(path)], env)[1]
            walls["murmur transcribe, one process per file"].append(time.perf_counter() - started)
            wers["murmur transcribe, one process per file"] = pooled_wer(references, texts)
            print(", ".join(f"{kind}: {w[-1]:.1f} s" for kind, w in walls.items()), flush=True)
    rows = []
    baseline = walls["faster-whisper batched, one process"]
    for kind, times in walls.items():
        rows.append(f"| {kind} | {statistics.median(times):.1f} s ({', '.join(f'{t:.1f}' for t in times)}) "
                    f"| {', '.join(f'{b / t:.2f}x' for t, b in zip(times, baseline))} | {wers[kind]:.1f}% |")
    print("\n".join(rows))
    write_results("make bench-files", "files", [
        f"{len(paths)} short real clips ({seconds:.0f} s in all; English, Spanish, French, German; 2.7–30 s), whole processes,",
        "base int8, every core, beam 5, language detected per file; the three alternate, repeat by repeat.",
        f"WER: pooled over the {sum(1 for r in references.values() if r)} English clips whose whole reference is known "
        "(Whisper's English normalizer).",
        "",
        "| command | wall, median (runs) | vs faster-whisper batched, run by run | WER |",
        "|---|---|---|---:|",
        *rows,
    ])

if __name__ == "__main__":
    main()
