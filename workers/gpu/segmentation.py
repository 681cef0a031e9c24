"""Segmentation: a chunk's timed words → sentence segments in source time, their bounds on speech.

Decode hands over words in chunk time (text from generate, times from align);
here they become sentences: cut at final punctuation, also where the speaker
paused long (or after a comma and a shorter pause), each break moved into the
pause the VAD heard near it, and every word trimmed to the speech it starts in.
The same sentence test finds where a looping decoder began to repeat itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from murmur.workers.cpu.chunking import Chunk
from murmur.workers.gpu import filters
from murmur.workers.transcript import Segment, Word

BREAK_REACH_S = 0.5  # how far from its aligned place a sentence break may move into a pause
ONSET_REACH_S = 0.5  # how late after its stretch of speech starts a first word may be aligned and still start with it
SPLIT_PAUSE_S = 1.0  # a sentence is also split where the speaker paused this long
CLAUSE_PAUSE_S = 0.6  # or this long after a comma: Whisper often joins two sentences with one
LOOP_MIN_WORDS = 4  # a repeated sentence this long is a loop; "Thank you." twice may be said
SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")
CLAUSE_END = (",", ";", ":", "、", "，", "；")
CLOSERS = "\"')]}»”’"  # quotes and brackets after the mark: `"Stop!"` ends a sentence
TITLES = frozenset({"mr.", "mrs.", "ms.", "dr.", "prof.", "mt."})  # a name follows: "Mr. Dashwood" is one sentence


def ends_sentence(word: str) -> bool:
    word = word.strip()
    return word.rstrip(CLOSERS).endswith(SENTENCE_END) and word.lower() not in TITLES


def ends_clause(word: str) -> bool:
    return word.rstrip(CLOSERS).endswith(CLAUSE_END)


def before_loop(words: Sequence[tuple[str, list[int]]]) -> int:
    """How many tokens come before the first sentence that repeats an earlier one word for word."""
    seen: set[str] = set()
    sentence: list[str] = []
    begin = position = 0
    for text, word_tokens in words:
        sentence.append(text.strip().lower())
        position += len(word_tokens)
        if ends_sentence(text):
            key = " ".join(sentence)
            if len(sentence) >= LOOP_MIN_WORDS and key in seen:
                return begin
            seen.add(key)
            sentence, begin = [], position
    return position


def sentences(chunk: Chunk, words: list[Word], language, avg_logprob, no_speech_prob, word_timestamps: bool) -> list[Segment]:
    """Words (chunk time) → sentences in source time whose bounds and words lie on speech."""
    groups: list[list[Word]] = [[]]
    for word in words:
        groups[-1].append(Word(*chunk.word_to_source(word.start, word.end), word.text, word.probability))
        if ends_sentence(word.text):
            groups.append([])
    kept = []
    for group in groups:
        text = "".join(w.text for w in group).strip()
        if text and filters.compression_ratio(text) <= filters.COMPRESSION_RATIO_THRESHOLD:
            kept.extend(_split_at_pauses(chunk, group))
    for before, after in zip(kept, kept[1:]):
        _break_in_pause(chunk, before, after)
    segments = []
    heard_until = -1.0  # where the last word placed ends
    for group in kept:
        text = "".join(w.text for w in group).strip()
        timed = []
        for w in group:
            start, end = chunk.snap(w.start, w.end)
            if chunk.speech:
                onset = chunk.stretch_at(start)[0]
                if heard_until <= onset <= start <= onset + ONSET_REACH_S:
                    start = onset  # the first word of a stretch starts with it: the alignment starts words late
            heard_until = end
            timed.append(Word(round(start, 3), round(end, 3), w.text, round(w.probability, 4)))
        segments.append(
            Segment(
                chunk_idx=chunk.idx,
                idx=len(segments),
                start=timed[0].start,
                end=max(timed[-1].end, timed[0].start),
                text=text,
                language=language,
                avg_logprob=float(avg_logprob),
                no_speech_prob=float(no_speech_prob),
                compression_ratio=filters.compression_ratio(text),
                words=timed if word_timestamps else None,
            )
        )
    return segments


def _split_at_pauses(chunk: Chunk, words: list[Word]) -> list[list[Word]]:
    """A sentence cut where the speaker paused SPLIT_PAUSE_S or longer, or CLAUSE_PAUSE_S
    after a comma: text with no full stop between two sentences, or one long
    sentence, still gives cues that do not stay on screen through the silence."""
    cuts = set()
    for pause in chunk.pauses(CLAUSE_PAUSE_S):
        if not (words[0].start < pause[0] and pause[1] < words[-1].start + BREAK_REACH_S):
            continue  # not inside: no word of the sentence starts after it (a late end is not speech)
        distance = [max(pause[0] - w.start, w.start - pause[1], 0.0) for w in words]
        j = min(range(1, len(words)), key=distance.__getitem__, default=None)
        if j is None or distance[j] > BREAK_REACH_S:
            continue
        if pause[1] - pause[0] >= SPLIT_PAUSE_S or ends_clause(words[j - 1].text):
            cuts.add(j)
    bounds = [0, *sorted(cuts), len(words)]
    return [words[a:b] for a, b in zip(bounds, bounds[1:])]


def _break_in_pause(chunk: Chunk, before: list[Word], after: list[Word]) -> None:
    """Move the break between two sentences into the pause the VAD heard there.

    The alignment can put the break a little inside the speech on either side;
    speakers pause between sentences, so when a pause lies within reach of the
    aligned break, the first sentence ends where the pause begins and the next
    starts where it ends.
    """
    pause = chunk.pause_near(after[0].start, BREAK_REACH_S)
    if pause is None or not before[0].start < pause[0] < pause[1] < after[-1].end:
        return  # none near, or not between them: a short sentence after a pause stays where it was said
    begin, end = pause
    for word in before:
        word.start, word.end = min(word.start, begin), min(word.end, begin)
    before[-1].end = begin
    for word in after:
        word.start, word.end = max(word.start, end), max(word.end, end)
