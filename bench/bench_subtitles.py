"""Subtitle timing on real speech: real clips joined with room tone, scored at each clip's speech edges.

The real clips of ../shared/audio/real shorter than 30 s (English, and the
Spanish one) are joined, in two files of about a minute, with gaps of room tone
(the quiet room recording, 0.4–2.5 s, seeded) between them. Each clip's speech
edges are marked on the clip alone, before joining, by its energy: the first
and last run of five 10 ms frames 15 dB over the clip's noise floor (and within
35 dB of its peak); a clip whose noise is as loud as its speech marks poorly. A clip is
scored on the segments that overlap it: its first segment's start and its last
segment's end against its edges. Reported: the share of clips with both edges
within 0.3 s, clips with no segment at all (dropped), and segments that
straddle a gap (run from one clip into the next). murmur (embedded, language
given) beside faster-whisper 1.2.1's BatchedInferencePipeline (the same model,
beam 5, language given).

Target (issue 31): ≥ 90% of edges within 0.3 s, nothing dropped.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_processes import AUDIO, write_results  # noqa: E402

from murmur.workers.cpu.audio import SAMPLE_RATE, decode_audio  # noqa: E402

REAL = AUDIO / "real"
WITHIN_S = 0.3
FRAME = SAMPLE_RATE // 100


def speech_edges(audio: np.ndarray, above_floor_db: float = 15.0, below_peak_db: float = 35.0,
                 run: int = 5) -> tuple[float, float]:
    """The first and last 10 ms frame of `run` or more frames in a row that are `above_floor_db` over the clip's
    noise floor (its 10th percentile of frame energy) and within `below_peak_db` of its loudest frame (s)."""
    frames = audio[: audio.size // FRAME * FRAME].reshape(-1, FRAME)
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = db >= max(np.percentile(db, 10) + above_floor_db, db.max() - below_peak_db)
    sustained = np.convolve(loud, np.ones(run), mode="valid") >= run  # frame i starts a run of loud frames
    starts = np.flatnonzero(sustained)
    return starts[0] * FRAME / SAMPLE_RATE, (starts[-1] + run) * FRAME / SAMPLE_RATE


def joined_files(folder: Path) -> list[tuple[Path, str, list[dict]]]:
    """The joined files, their language and, per clip, where it lies and its speech edges (source time)."""
    clips = [c for c in json.loads((REAL / "manifest.json").read_text())
             if c["lang"] in ("en", "es") and c.get("text") and c["dur"] < 30]
    room = decode_audio(str(REAL / "silence" / "nst_quiet_room_4s.wav"))
    rng = random.Random(0)
    groups = {"en_a": [c for c in clips if c["lang"] == "en"][::2], "en_b": [c for c in clips if c["lang"] == "en"][1::2],
              "es": [c for c in clips if c["lang"] == "es"]}
    out = []
    for name, group in groups.items():
        pieces, marks, t = [], [], 0.0
        for clip in group:
            gap = rng.uniform(0.4, 2.5)
            start = rng.randrange(0, room.size - int(gap * SAMPLE_RATE))
            pieces.append(room[start: start + int(gap * SAMPLE_RATE)])
            t += pieces[-1].size / SAMPLE_RATE
            audio = decode_audio(str(REAL / clip["file"]))
            a, b = speech_edges(audio)
            marks.append({"clip": clip["file"], "from": t, "to": t + audio.size / SAMPLE_RATE, "start": t + a, "end": t + b})
            pieces.append(audio)
            t += audio.size / SAMPLE_RATE
        pieces.append(room[: int(1.0 * SAMPLE_RATE)])
        path = folder / f"joined_{name}.wav"
        sf.write(path, np.concatenate(pieces), SAMPLE_RATE)
        out.append((path, group[0]["lang"], marks))
    return out


def scored(marks: list[dict], segments: list[tuple[float, float]]) -> dict:
    rows, dropped, within = [], 0, 0
    for m in marks:
        mine = [(a, b) for a, b in segments if b > m["from"] and a < m["to"]]
        if not mine:
            dropped += 1
            rows.append(f"{m['clip']}: dropped")
            continue
        start_err, end_err = mine[0][0] - m["start"], mine[-1][1] - m["end"]
        ok = abs(start_err) <= WITHIN_S and abs(end_err) <= WITHIN_S
        within += ok
        rows.append(f"{m['clip']}: start {start_err:+.2f} s, end {end_err:+.2f} s{'' if ok else '  <-'}")
    straddling = sum(1 for a, b in segments if sum(1 for m in marks if b > m["from"] and a < m["to"]) > 1)
    return {"within": within, "clips": len(marks), "dropped": dropped, "straddling": straddling, "rows": rows}


def main() -> None:
    import murmur
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from murmur.workers.gpu.model import resolve_model

    pipeline = BatchedInferencePipeline(WhisperModel(str(resolve_model("base")), device="cpu", compute_type="int8"))
    totals = {"murmur": [], "faster-whisper batched": []}
    with tempfile.TemporaryDirectory() as folder:
        for path, language, marks in joined_files(Path(folder)):
            ours = [(s.start, s.end) for s in murmur.transcribe(str(path), language=language).segments]
            theirs = [(s.start, s.end) for s in pipeline.transcribe(str(path), language=language, beam_size=5)[0]]
            for system, segments in (("murmur", ours), ("faster-whisper batched", theirs)):
                result = scored(marks, segments)
                totals[system].append(result)
                print(f"{path.name} {system}: {result['within']}/{result['clips']} within {WITHIN_S} s, "
                      f"{result['dropped']} dropped, {result['straddling']} straddling")
                for row in result["rows"]:
                    print("   ", row)
    lines = [f"Real clips (< 30 s, English and Spanish) joined with room tone, 3 files; edges within {WITHIN_S} s.", "",
             "| system | clips with both edges within 0.3 s | dropped | segments straddling a gap |", "|---|---:|---:|---:|"]
    for system, results in totals.items():
        within, clips = sum(r["within"] for r in results), sum(r["clips"] for r in results)
        lines.append(f"| {system} | {within}/{clips} ({within / clips:.0%}) | {sum(r['dropped'] for r in results)} | "
                     f"{sum(r['straddling'] for r in results)} |")
    write_results("bench/bench_subtitles.py", "subtitles", lines, show=True)


if __name__ == "__main__":
    main()
