"""murmur's embedded runner beside faster-whisper, same model, threads, beam and batch.

Run with `make bench` (or `python bench/bench_embedded.py --help`). Every system
transcribes the same files in this one process; the best of `--repeats` wall
times counts (model loading excluded for all). WER uses Whisper's English
normalizer and jiwer over the whole set.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import jiwer
import numpy as np
from whisper_normalizer.english import EnglishTextNormalizer

from murmur.db.session import sessions, upgrade
from murmur.tasks.context import Context
from murmur.tasks.embedded import runner as embedded
from murmur.workers.cpu.audio import SAMPLE_RATE, decode_audio
from murmur.workers.cpu.chunking import chunk_audio, plan_chunks
from murmur.workers.cpu.features import log_mel
from murmur.workers.cpu.vad import SileroVad, speech_spans
from murmur.workers.gpu.model import resolve_model
from murmur.workers.options import JobOptions

ROOT = Path(__file__).resolve().parents[1]

AUDIO = Path(os.environ.get("MURMUR_BENCH_AUDIO", ROOT.parent / "shared" / "audio"))
normalize = EnglishTextNormalizer()


def audio_sets() -> dict[str, list[Path]]:
    real = sorted(p for p in (AUDIO / "real" / "en").iterdir() if p.suffix in (".wav", ".flac", ".mp3", ".opus"))
    return {"en_5min": [AUDIO / "tts" / "en_5min.flac"], "real-en": real}


def reference(path: Path) -> str:
    return path.with_suffix(".txt").read_text()


def best_time(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="base", help="a bundled name or a CTranslate2 directory, used by every system")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    from faster_whisper import BatchedInferencePipeline, WhisperModel
    from faster_whisper.feature_extractor import FeatureExtractor
    from faster_whisper.vad import VadOptions as FwVadOptions
    from faster_whisper.vad import get_speech_timestamps as fw_speech_timestamps

    model_dir = str(resolve_model(args.model))
    fw = WhisperModel(model_dir, device=args.device, compute_type=args.compute_type, cpu_threads=args.threads)
    fw_batched = BatchedInferencePipeline(fw)
    db_url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    upgrade(db_url)
    ctx = Context(db=sessions(db_url), device=args.device, compute_type=args.compute_type, threads=args.threads)
    options = JobOptions(model=args.model, language="en", batch_size=args.batch_size, beam_size=args.beam_size)
    common = dict(language="en", beam_size=args.beam_size)

    def murmur(path):
        return [s.text for s in embedded.run(ctx, str(path), options).segments]

    def fw_texts(segments):
        return [s.text for s in segments]

    systems = {
        "murmur (sentences, timestamps)": murmur,
        "fw BatchedInferencePipeline": lambda p: fw_texts(fw_batched.transcribe(str(p), batch_size=args.batch_size, **common)[0]),
        "fw Batched, timestamps on": lambda p: fw_texts(
            fw_batched.transcribe(str(p), batch_size=args.batch_size, without_timestamps=False, **common)[0]
        ),
        "fw sequential": lambda p: fw_texts(fw.transcribe(str(p), **common)[0]),
    }
    murmur(AUDIO / "real" / "en" / "jfk_inaugural_1961.flac")  # warm: model, VAD, caches
    systems["fw BatchedInferencePipeline"](AUDIO / "real" / "en" / "jfk_inaugural_1961.flac")

    rows = []
    for set_name, files in audio_sets().items():
        seconds = sum(decode_audio(p).size for p in files) / SAMPLE_RATE
        refs = [normalize(reference(p)) for p in files]
        for system, fn in systems.items():
            elapsed, outputs = best_time(lambda: [fn(p) for p in files], args.repeats)
            hyps = [normalize(" ".join(texts)) for texts in outputs]
            rows.append(dict(set=set_name, system=system, audio_s=seconds, wall_s=elapsed, speed=seconds / elapsed,
                             wer=100 * jiwer.wer(refs, hyps), segments=sum(len(t) for t in outputs)))
            print(f"  {set_name:8s} {system:32s} {seconds / elapsed:6.1f}x  WER {rows[-1]['wer']:.2f}", file=sys.stderr, flush=True)

    # stage throughput on en_5min, one thread, against faster-whisper's own stages
    audio = decode_audio(AUDIO / "tts" / "en_5min.flac")
    seconds = audio.size / SAMPLE_RATE
    vad = SileroVad()
    vad_s, probs = best_time(lambda: vad.probabilities(audio), 3)
    spans_s, spans = best_time(lambda: speech_spans(probs), 3)
    fw_vad_s, _ = best_time(lambda: fw_speech_timestamps(audio, FwVadOptions(min_silence_duration_ms=160)), 3)
    chunks = [chunk_audio(audio, c) for c in plan_chunks(spans, probs, seconds)]
    chunk_seconds = sum(c.size for c in chunks) / SAMPLE_RATE
    feat_s, _ = best_time(lambda: log_mel(chunks, 80), 3)
    extractor = FeatureExtractor()
    fw_feat_s, _ = best_time(lambda: [extractor(c) for c in chunks], 3)

    table = render(rows, args, dict(
        vad=seconds / (vad_s + spans_s), fw_vad=seconds / fw_vad_s,
        feat=chunk_seconds / feat_s, fw_feat=chunk_seconds / fw_feat_s,
    ))
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = args.out / f"embedded-{args.device}-{stamp}.md"
    path.write_text(table + "\n")
    print(f"written to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", file=sys.stderr)


def render(rows: list[dict], args, stages: dict) -> str:
    lines = [
        f"murmur embedded vs faster-whisper 1.2.1 — {Path(args.model).name} {args.compute_type} on {args.device}, "
        f"{args.threads} threads, beam {args.beam_size}, batch {args.batch_size}, best of {args.repeats}; "
        f"{platform.node()} {datetime.now(timezone.utc):%Y-%m-%d}",
        "",
        "| set | system | audio s | wall s | x real time | murmur ÷ this | WER % | segments |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ours = next(r for r in rows if r["set"] == row["set"] and r["system"].startswith("murmur"))
        lines.append(
            f"| {row['set']} | {row['system']} | {row['audio_s']:.1f} | {row['wall_s']:.2f} | {row['speed']:.1f} | "
            f"{ours['speed'] / row['speed']:.2f} | {row['wer']:.2f} | {row['segments']} |"
        )
    lines += [
        "",
        "| stage (en_5min, 1 thread) | murmur x real time | faster-whisper x real time |",
        "|---|---:|---:|",
        f"| VAD (probabilities + spans) | {stages['vad']:.0f} | {stages['fw_vad']:.0f} |",
        f"| log-mel features (of chunk audio) | {stages['feat']:.0f} | {stages['fw_feat']:.0f} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
