"""Word confidence: do words murmur gets wrong carry a lower `probability` than words it gets right?

Every real clip of ../shared/audio/real with a reference (English, French,
German, Spanish) is transcribed with word timestamps (base int8, beam 5, the
clip's language given). Each word of the hypothesis is normalized as the
references are (Whisper's English normalizer for English, the basic one for
the others) and aligned to the reference with jiwer: a word whose tokens all
align as hits is right; one with a substitution or an insertion is wrong.
Reported: how many of each, their mean probability, and the ROC AUC of the
probability as a right-vs-wrong score (0.5: it means nothing; 1: it separates
them perfectly).

Target (issue 31): wrong words have a clearly lower mean probability than right ones.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import jiwer
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_processes import AUDIO, write_results  # noqa: E402

SET = AUDIO / "real"


def judged_words(reference: str, words: list[tuple[str, float]], normalize) -> list[tuple[bool, float]]:
    """(right, probability) for each hypothesis word that survives normalization."""
    tokens, owner = [], []
    for k, (text, _) in enumerate(words):
        for token in normalize(text).split():
            tokens.append(token)
            owner.append(k)
    ref = normalize(reference).split()
    if not tokens or not ref:
        return []
    wrong = set()
    for chunk in jiwer.process_words(" ".join(ref), " ".join(tokens)).alignments[0]:
        if chunk.type in ("substitute", "insert"):
            wrong.update(owner[i] for i in range(chunk.hyp_start_idx, chunk.hyp_end_idx))
    return [(k not in wrong, words[k][1]) for k in sorted(set(owner))]


def auc(right: list[float], wrong: list[float]) -> float:
    """The chance that a right word's probability is above a wrong one's (ties count half)."""
    if not right or not wrong:
        return float("nan")
    above = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return above / (len(right) * len(wrong))


def main() -> None:
    import murmur

    clips = [c for c in json.loads((SET / "manifest.json").read_text()) if c.get("text") and c["lang"]]
    english, basic = EnglishTextNormalizer(), BasicTextNormalizer()
    judged: list[tuple[bool, float]] = []
    per_language: dict[str, list[tuple[bool, float]]] = {}
    for clip in clips:
        transcript = murmur.transcribe(str(SET / clip["file"]), language=clip["lang"], word_timestamps=True)
        words = [(w.text, w.probability) for s in transcript.segments for w in (s.words or ())]
        found = judged_words(clip["text"], words, english if clip["lang"] == "en" else basic)
        judged += found
        per_language.setdefault(clip["lang"], []).extend(found)
        print(f"{clip['file']}: {len(found)} words, {sum(not r for r, _ in found)} wrong", flush=True)
    lines = [f"{len(clips)} real clips of `../shared/audio/real`, base int8, beam 5, language given, word timestamps.", "",
             "| words | right | wrong | mean probability, right | wrong | median, right | wrong | AUC |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rows in [("all", judged), *sorted(per_language.items())]:
        right = [p for r, p in rows if r]
        wrong = [p for r, p in rows if not r]
        mean = lambda xs: statistics.fmean(xs) if xs else float("nan")  # noqa: E731
        median = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
        lines.append(f"| {name} | {len(right)} | {len(wrong)} | {mean(right):.3f} | {mean(wrong):.3f} | "
                     f"{median(right):.3f} | {median(wrong):.3f} | {auc(right, wrong):.2f} |")
    write_results("bench/bench_confidence.py", "confidence", lines, show=True)


if __name__ == "__main__":
    main()
