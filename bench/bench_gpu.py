"""On a GPU: murmur embedded and murmur's cross-job batching beside faster-whisper batched.

One process, the model loaded once by each system (base float16 on CUDA), a
warm-up first; then for each batch size (16, 32) and each case, murmur and
faster-whisper alternate, `--repeats` times, median seconds:

- one long file (en_5min), language detected: murmur's embedded runner
  against BatchedInferencePipeline;
- 40 short jobs (the test clips, 3–15 s, four languages, over and over) and the
  long one: murmur's many-jobs runner (`tasks/embedded/files.py`: their chunks
  in shared batches, as a GPU worker decodes the fleet's) against
  BatchedInferencePipeline transcribing the 41 files one after another.

Then what `--diarize` costs there (issue 28): the long file with and without
it, alternating, at the first batch size. The speaker encoder runs on the
machine's CPU cores during prepare, as a CPU worker's would; the ratio is of
runs in one warm process, so it leaves out the start-up a whole process adds.

It needs no Redis and no Postgres (the embedded runner's SQLite), so it runs on
a bare lent GPU machine: `bench/gpu/carry.sh` prepares what travels there and
says how. `--dry-run` runs the same code on this CPU with small sizes (int8,
batch 4, 4 short clips and a 68 s file) to check it before a GPU is lent.
Results: a markdown table in bench/results/ (and in $OUT when that is set).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SHORT = ["jfk_inaugural_1961.flac", "pocketsphinx_goforward.wav", "mfa_thoughts.flac", "librispeech_61-70968-0000.flac",
         "librivox_sense_sensibility_0890.wav", "mls_spanish_13697_11991_000000.opus", "fr_1min_tail.flac",
         "stereo_two_speakers.wav"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compute-type", default="float16")
    parser.add_argument("--model", default="base", help="a bundled name or a CTranslate2 directory")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--short-jobs", type=int, default=40)
    parser.add_argument("--long", type=Path, default=DATA / "en_5min.flac")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dry-run", action="store_true", help="this CPU, small sizes: checks the script, measures nothing")
    args = parser.parse_args()
    if args.dry_run:
        args.device, args.compute_type, args.batch_sizes, args.short_jobs, args.repeats = "cpu", "int8", [4], 4, 1
        args.long = DATA / "librivox_grimmelshausen_simplicissimus_title.mp3"
    scratch = Path(tempfile.mkdtemp(prefix="murmur-bench-gpu-"))
    os.environ["MURMUR_DATABASE_URL"] = f"sqlite:///{scratch / 'bench.db'}"  # before murmur reads its settings

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from murmur.settings import get_settings
    from murmur.tasks import jobs
    from murmur.tasks.embedded.files import run_jobs
    from murmur.tasks.embedded.runner import embedded_context, run_job
    from murmur.workers.gpu.model import resolve_model
    from murmur.workers.transcript import Transcript

    model_dir = str(resolve_model(args.model))
    ctx = embedded_context(args.device, args.compute_type)
    settings = get_settings()
    shorts = [str(DATA / SHORT[i % len(SHORT)]) for i in range(args.short_jobs)]
    many = shorts + [str(args.long)]

    def murmur_one(batch: int, diarize: bool = False) -> Transcript:
        options = {"model": model_dir, "batch_size": batch, "diarize": diarize}
        return run_job(ctx, jobs.create(ctx.db, jobs.check(str(args.long), options, settings)))

    def murmur_many(batch: int) -> None:
        ids = [jobs.create(ctx.db, jobs.check(path, {"model": model_dir, "batch_size": batch}, settings)) for path in many]
        failed = []
        run_jobs(ctx, ids, lambda job_id, transcript, error: failed.append(error) if error else None)
        if failed:
            raise SystemExit(f"murmur: {len(failed)} jobs failed: {failed[0]}")

    fw = WhisperModel(model_dir, device=args.device, compute_type=args.compute_type)
    pipeline = BatchedInferencePipeline(fw)

    def fw_files(paths: list[str], batch: int) -> None:
        for path in paths:
            segments, _ = pipeline.transcribe(path, beam_size=5, batch_size=batch)
            list(segments)

    cases = {f"one long file ({args.long.stem}), language detected": (murmur_one, lambda b: fw_files([str(args.long)], b)),
             f"{args.short_jobs} short jobs and the long one": (murmur_many, lambda b: fw_files(many, b))}
    started = time.perf_counter()
    murmur_one(args.batch_sizes[0])  # warm-up: model loads, CUDA kernels chosen
    fw_files(shorts[:1], args.batch_sizes[0])
    print(f"warm-up {time.perf_counter() - started:.1f} s", flush=True)
    rows = []
    for batch in args.batch_sizes:
        for name, (ours, theirs) in cases.items():
            times: dict[str, list[float]] = {"murmur": [], "faster-whisper": []}
            for _ in range(args.repeats):
                for who, run in (("murmur", ours), ("faster-whisper", theirs)):
                    t = time.perf_counter()
                    run(batch)
                    times[who].append(time.perf_counter() - t)
            ratios = [f / m for m, f in zip(times["murmur"], times["faster-whisper"])]
            rows.append(f"| {name} | {batch} | {statistics.median(times['murmur']):.2f} s | "
                        f"{statistics.median(times['faster-whisper']):.2f} s | {', '.join(f'{r:.2f}x' for r in ratios)} |")
            print(rows[-1], flush=True)
    plain_s, diarized_s = [], []
    if not any(segment.speaker for segment in murmur_one(args.batch_sizes[0], diarize=True).segments):  # warm-up
        raise SystemExit("murmur: the diarized run labelled no segment with a speaker")
    for _ in range(args.repeats):
        for diarize, times in ((False, plain_s), (True, diarized_s)):
            t = time.perf_counter()
            murmur_one(args.batch_sizes[0], diarize)
            times.append(time.perf_counter() - t)
    costs = ", ".join(f"{(d / p - 1) * 100:+.1f}%" for p, d in zip(plain_s, diarized_s))
    diarize_row = (f"| {args.long.stem} | {args.batch_sizes[0]} | {statistics.median(plain_s):.2f} s | "
                   f"{statistics.median(diarized_s):.2f} s | {costs} |")
    print(diarize_row, flush=True)
    device = _device_name(args.device)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    kind = "dry-run" if args.dry_run else args.device
    text = "\n".join([
        f"# make bench-gpu, {stamp} UTC ({device}; {platform.machine()}, {os.cpu_count()} CPUs){' — DRY RUN on CPU: no GPU figures' if args.dry_run else ''}",
        "",
        f"One process; {args.model} {args.compute_type} loaded once by each system, beam 5, language detected; "
        f"medians of {args.repeats}, the two alternating.",
        "Ratio: faster-whisper batched's seconds over murmur's, repeat by repeat (≥ 1: murmur faster).",
        "",
        "| case | batch | murmur | faster-whisper batched | ratio |",
        "|---|---:|---:|---:|---|",
        *rows,
        "",
        "## What --diarize costs (murmur embedded, the speaker encoder on this machine's CPU cores; each pair)",
        "",
        "| file | batch | without | with --diarize | each pair |",
        "|---|---:|---:|---:|---|",
        diarize_row,
        "",
    ])
    out = ROOT / "bench" / "results" / f"gpu-{kind}-{stamp}.md"
    out.write_text(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], out.name).write_text(text)
    print(f"written: {out.relative_to(ROOT)}")


def _device_name(device: str) -> str:
    if device != "cuda":
        return platform.processor() or "CPU"
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - only a label
        return "CUDA"


if __name__ == "__main__":
    main()
