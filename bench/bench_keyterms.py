"""Custom vocabulary: keyterm recall and WER on ../shared/audio/keyterms, with and without a prompt.

Each clip comes with the terms spoken in it and a prompt that names them among
distractors (see the set's README). Modes: murmur with no prompt, with the
clip's `prompt`, with that text as `hotwords`; faster-whisper 1.2.1's
BatchedInferencePipeline with no prompt, with it as `initial_prompt`, and as
`hotwords`: every mode is given the same text, terms and distractors, as a user
who does not know which of them a recording holds. Same model (base int8), beam 5, the clip's language given, every
core. Scored as the set's README says: recall of (clip, term) pairs folded
(lowercase, no accents, punctuation runs to one space) and matched as whole
words; distractor hits; WER pooled with Whisper's normalizers (English,
basic for the others).

Targets (issue 31): recall with a prompt ≥ faster-whisper's best mode and
≥ 90%; WER with a prompt no worse than without.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from pathlib import Path

import jiwer
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_processes import AUDIO, write_results  # noqa: E402

SET = AUDIO / "keyterms"


def fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def has_term(hypothesis: str, term: str) -> bool:
    return f" {fold(term)} " in f" {fold(hypothesis)} "


def murmur_texts(clips: list[dict], mode: str) -> list[str]:
    import murmur

    texts = []
    for clip in clips:
        extra = {"none": {}, "prompt": {"prompt": clip["prompt"]}, "hotwords": {"hotwords": clip["prompt"]}}[mode]
        transcript = murmur.transcribe(str(SET / clip["file"]), language=clip["lang"], **extra)
        texts.append(" ".join(s.text.strip() for s in transcript.segments))
    return texts


def faster_whisper_texts(clips: list[dict], mode: str) -> list[str]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from murmur.workers.gpu.model import resolve_model

    pipeline = BatchedInferencePipeline(WhisperModel(str(resolve_model("base")), device="cpu", compute_type="int8"))
    texts = []
    for clip in clips:
        extra = {"none": {}, "initial_prompt": {"initial_prompt": clip["prompt"]}, "hotwords": {"hotwords": clip["prompt"]}}[mode]
        segments, _ = pipeline.transcribe(str(SET / clip["file"]), language=clip["lang"], beam_size=5, batch_size=16, **extra)
        texts.append(" ".join(s.text.strip() for s in segments))
    return texts


def score(clips: list[dict], texts: list[str]) -> dict:
    pairs = [(clip["file"], text, term) for clip, text in zip(clips, texts) for term in clip["keyterms"]]
    missed = [f"{name}:{term}" for name, text, term in pairs if not has_term(text, term)]
    distractors = sum(has_term(text, d) for clip, text in zip(clips, texts) for d in clip["distractors"])
    english, basic = EnglishTextNormalizer(), BasicTextNormalizer()
    norm = [(english if c["lang"] == "en" else basic) for c in clips]
    refs = [n(c["text"]) for n, c in zip(norm, clips)]
    hyps = [n(t) for n, t in zip(norm, texts)]
    return {"recall": 1 - len(missed) / len(pairs), "distractors": distractors, "wer": jiwer.wer(refs, hyps), "missed": missed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="murmur:none,murmur:prompt,murmur:hotwords,"
                                           "faster-whisper:none,faster-whisper:initial_prompt,faster-whisper:hotwords")
    parser.add_argument("--limit", type=int, default=0, help="the first N clips only (a quick look)")
    parser.add_argument("--show", action="store_true", help="print each clip's text")
    args = parser.parse_args()
    clips = json.loads((SET / "manifest.json").read_text())
    clips = clips[: args.limit] if args.limit else clips
    rows = []
    for spec in args.modes.split(","):
        system, mode = spec.split(":")
        texts = (murmur_texts if system == "murmur" else faster_whisper_texts)(clips, mode)
        result = score(clips, texts)
        groups = {g: score([c for c in clips if c["group"] == g], [t for c, t in zip(clips, texts) if c["group"] == g])
                  for g in ("synthetic", "real")}
        rows.append((system, mode, result, groups))
        print(f"{system:15} {mode:16} recall {result['recall']:6.1%}  distractors {result['distractors']:3d}  "
              f"WER {result['wer']:6.1%}  (synthetic {groups['synthetic']['recall']:.1%}, real {groups['real']['recall']:.1%})",
              flush=True)
        if args.show:
            for clip, text in zip(clips, texts):
                print(f"  {clip['file']}: {text}")
        print("  missed:", ", ".join(result["missed"]) or "none", flush=True)
    lines = [f"{len(clips)} clips of `../shared/audio/keyterms`, base int8, beam 5, language given.", "",
             "| system | mode | keyterm recall | synthetic | real | distractor hits | WER |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {s} | {m} | {r['recall']:.1%} | {g['synthetic']['recall']:.1%} | {g['real']['recall']:.1%} | "
              f"{r['distractors']} | {r['wer']:.1%} |" for s, m, r, g in rows]
    if not args.limit:
        write_results(" ".join(["bench/bench_keyterms.py", *sys.argv[1:]]), "keyterms", lines)


if __name__ == "__main__":
    main()
