"""Unusual voices: is speech heard when it is higher, whispered, far off, through a phone or quiet,
while music, hum, noise and a quiet room stay empty?

Every real clip of ../shared/audio/real with a reference is changed six ways,
each a rough stand-in for a voice a VAD finds hard (no recordings of such
voices under a free licence are here):
- pitch +7 and +12 semitones (a phase vocoder, then resampled: formants rise too,
  as in a child's or a cartoon voice; +12 stands in for falsetto);
- whispered (each 25 ms frame's spectral envelope, from 16 LPC coefficients,
  excited by white noise: no voicing at all);
- far (convolved with a 0.4 s decaying-noise room response, peak 0.08, over
  the quiet room's tone);
- phone (band-passed to 300–3400 Hz);
- quiet (26 dB down).
Eight sounds with no speech join them: the quiet room, white and pink noise,
mains hum, piano-like notes, a pad of chords, drums with notes, key clicks.

Each is transcribed with the clip's language given (base int8, beam 5) by
murmur as it is (silero v6.2 and v6.0 listening), murmur with v6.2 alone (what
it ran before), and faster-whisper's BatchedInferencePipeline (silero v6.0,
its own VAD settings). Reported per kind of voice: mean WER (each clip's
capped at 1) and how many clips came out empty or wholly wrong (WER ≥ 1), and
how many of the no-speech sounds printed anything.

Target (issue 31, part 4): unusual voices kept; the no-speech sounds stay empty.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf
from scipy import linalg, signal
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_processes import AUDIO, write_results  # noqa: E402

SET = AUDIO / "real"
RATE = 16000
KINDS = ("pitch +7", "pitch +12", "whispered", "far", "phone", "quiet")


def _stretch(x: np.ndarray, factor: float, n: int = 1024, hop: int = 256) -> np.ndarray:
    """`x` made `factor` times longer at the same pitch (a phase vocoder)."""
    window = np.hanning(n)
    frames = np.array([np.fft.rfft(window * x[i : i + n]) for i in range(0, x.size - n, hop)])
    expected = 2 * np.pi * hop * np.arange(frames.shape[1]) / n
    phase, out = np.angle(frames[0]), []
    for t in np.arange(0, len(frames) - 1, 1 / factor):
        i, frac = int(t), t - int(t)
        out.append(((1 - frac) * np.abs(frames[i]) + frac * np.abs(frames[i + 1])) * np.exp(1j * phase))
        advance = np.angle(frames[i + 1]) - np.angle(frames[i]) - expected
        phase = phase + expected + advance - 2 * np.pi * np.round(advance / (2 * np.pi))
    y, weight = np.zeros(hop * len(out) + n), np.zeros(hop * len(out) + n)
    for i, spectrum in enumerate(out):
        y[i * hop : i * hop + n] += window * np.fft.irfft(spectrum, n)
        weight[i * hop : i * hop + n] += window**2
    return y / np.maximum(weight, 1e-6)


def pitched(x: np.ndarray, semitones: float) -> np.ndarray:
    factor = 2 ** (semitones / 12)
    y = _stretch(x, factor)
    return signal.resample(y, int(y.size / factor))[: x.size]


def whispered(x: np.ndarray, rng: np.random.Generator, order: int = 16, n: int = 400) -> np.ndarray:
    out, window = np.zeros(x.size), np.hanning(n)
    for start in range(0, x.size - n, n // 2):
        frame = x[start : start + n] * window
        r = np.correlate(frame, frame, "full")[n - 1 : n + order]  # lags 0 … order
        if r[0] < 1e-8:
            continue
        lpc = linalg.solve_toeplitz(r[:order], -r[1 : order + 1])
        gain = np.sqrt(max(r[0] + lpc @ r[1 : order + 1], 1e-12) / n)
        out[start : start + n] += signal.lfilter([1], np.r_[1, lpc], gain * rng.standard_normal(n)) * window
    return out / (np.abs(out).max() + 1e-9) * np.abs(x).max() * 0.5


def far(x: np.ndarray, room: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    response = rng.standard_normal(6400) * np.exp(-np.arange(6400) / 1300)
    response[0] = 4
    y = signal.fftconvolve(x, response)[: x.size]
    return y / np.abs(y).max() * 0.08 + np.resize(room, x.size)


def phone(x: np.ndarray) -> np.ndarray:
    b, a = signal.butter(4, [300, 3400], btype="band", fs=RATE)
    return signal.lfilter(b, a, x) * 0.7


def voices(x: np.ndarray, room: np.ndarray, rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray]]:
    yield "pitch +7", pitched(x, 7)
    yield "pitch +12", pitched(x, 12)
    yield "whispered", whispered(x, rng)
    yield "far", far(x, room, rng)
    yield "phone", phone(x)
    yield "quiet", x * 0.05


def no_speech(room: np.ndarray, rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray]]:
    n = 8 * RATE
    t = np.arange(n) / RATE
    yield "quiet room", np.resize(room, n)
    yield "white noise", 0.05 * rng.standard_normal(n)
    pink = signal.lfilter([1], [1, -0.98], rng.standard_normal(n))
    yield "pink noise", 0.3 * pink / np.abs(pink).max()
    yield "hum", 0.2 * np.sin(2 * np.pi * 50 * t) + 0.1 * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(n)
    part = t[: n // 16]
    notes = np.concatenate([sum(np.sin(2 * np.pi * f * k * part) / k for k in range(1, 7)) * np.exp(-part * 3)
                            for f in (261.6, 329.6, 392.0, 523.3, 440.0, 349.2, 293.7, 246.9) * 2])
    notes = notes / np.abs(notes).max()
    yield "notes", 0.5 * notes
    chords = sum(np.sin(2 * np.pi * f * t) * (0.6 + 0.4 * np.sin(np.pi * t)) for f in (220, 277.2, 329.6, 440))
    yield "chords", 0.4 * chords / np.abs(chords).max()
    drums = np.zeros(n)
    for s in range(0, n, RATE // 4):
        k = np.arange(1600)
        drums[s : s + 1600] += np.sin(2 * np.pi * 60 * k / RATE) * np.exp(-k / 300)
        drums[s + 2000 : s + 2800] += 0.5 * rng.standard_normal(800) * np.exp(-np.arange(800) / 150)
    yield "drums", 0.6 * drums / np.abs(drums).max() + 0.3 * notes
    clicks = np.zeros(n)
    clicks[rng.integers(0, n, 30)] = 0.8
    yield "key clicks", signal.lfilter([1], [1, -0.9], clicks) + 0.003 * rng.standard_normal(n)


def write_wav(path: Path, x: np.ndarray) -> str:
    sf.write(path, np.clip(x, -1, 1), RATE, subtype="PCM_16")
    return str(path)


def murmur_texts(items: list[tuple[str, str | None]], v62_alone: bool) -> list[str]:
    import murmur
    import murmur.tasks.context as context
    from murmur.workers.cpu.silero_weights import silero_v62
    from murmur.workers.cpu.vad import SileroVad

    if v62_alone:
        context.SileroVad = lambda: SileroVad([silero_v62()])  # the VAD murmur listened with before
    try:
        return [murmur.transcribe(path, language=lang).text for path, lang in items]
    finally:
        context.SileroVad = SileroVad


def faster_whisper_texts(items: list[tuple[str, str | None]]) -> list[str]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from murmur.workers.gpu.model import resolve_model

    pipeline = BatchedInferencePipeline(WhisperModel(str(resolve_model("base")), device="cpu", compute_type="int8"))
    texts = []
    for path, lang in items:
        segments, _ = pipeline.transcribe(path, language=lang, beam_size=5, batch_size=16)
        texts.append(" ".join(s.text.strip() for s in segments))
    return texts


def main() -> None:
    from murmur.workers.cpu.audio import decode_audio

    rng = np.random.default_rng(3)
    room = decode_audio(SET / "silence" / "nst_quiet_room_4s.wav")
    clips = [c for c in json.loads((SET / "manifest.json").read_text()) if c.get("text") and c["lang"]]
    english, basic = EnglishTextNormalizer(), BasicTextNormalizer()
    with tempfile.TemporaryDirectory() as tmp:
        items: list[tuple[str, str, str | None, str]] = []  # (kind, path, language, reference)
        for i, clip in enumerate(clips):
            x = decode_audio(SET / clip["file"]).astype(np.float64)
            for kind, y in voices(x, room, rng):
                items.append((kind, write_wav(Path(tmp) / f"{i}-{len(items)}.wav", y), clip["lang"], clip["text"]))
        for kind, y in no_speech(room, rng):
            items.append(("no speech", write_wav(Path(tmp) / f"none-{len(items)}.wav", y), None, ""))
        runs = {"murmur (v6.2 and v6.0)": murmur_texts([(p, lang) for _, p, lang, _ in items], v62_alone=False),
                "murmur, v6.2 alone": murmur_texts([(p, lang) for _, p, lang, _ in items], v62_alone=True),
                "faster-whisper batched": faster_whisper_texts([(p, lang) for _, p, lang, _ in items])}
    lines = [f"{len(clips)} real clips of `../shared/audio/real`, each changed six ways, and 8 sounds with no speech; "
             "base int8, beam 5, language given. Per kind: mean WER (each clip's capped at 1) / clips empty or wholly wrong.", "",
             "| system | " + " | ".join(KINDS) + " | no-speech sounds that printed text |",
             "|---|" + "---:|" * (len(KINDS) + 1)]
    for system, texts in runs.items():
        cells = []
        for kind in KINDS:
            scores = []
            for (k, _, lang, ref), text in zip(items, texts):
                if k == kind:
                    normalize = english if lang == "en" else basic
                    scores.append(min(jiwer.wer(normalize(ref), normalize(text) or "-"), 1.0))
            cells.append(f"{statistics.fmean(scores):.3f} / {sum(s >= 1.0 for s in scores)}")
        printed = sum(bool(text.strip()) for (k, *_), text in zip(items, texts) if k == "no speech")
        lines.append(f"| {system} | " + " | ".join(cells) + f" | {printed}/8 |")
        print(system, [text for (k, *_), text in zip(items, texts) if k == "no speech" and text.strip()], flush=True)
    write_results("bench/bench_voices.py", "voices", lines, show=True)


if __name__ == "__main__":
    main()
